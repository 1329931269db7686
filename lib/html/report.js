// The libmi HTML report: draws the page from the JSON in #mi-data with
// hand-written SVG (no library, nothing fetched). The URL fragment
// #head=L1H2&dest=7 picks the head and destination token; when drawn, <body>
// gets data-status="ok" (or "error: ..."), which the browser test reads.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var data, state = { head: null, dest: null };
  var KIND_COLOUR = { direct: "#7f7f7f", head: "#1f77b4", virtual: "#9467bd", bias: "#bcbd22" };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(x, digits) {
    return x === null || x === undefined ? "–" : x.toFixed(digits === undefined ? 3 : digits);
  }
  function lift(x, chance) {
    if (x === null || chance === null || !(chance > 0)) return "";
    var r = x / chance;
    return r >= 10 ? r.toFixed(0) + "×" : r.toFixed(1) + "×";
  }
  function name(l, h) { return "L" + l + "H" + h; }
  function headIndex(label) {
    var m = /^L(\d+)H(\d+)$/.exec(label || "");
    if (!m) return null;
    var l = +m[1], h = +m[2];
    if (l >= data.model.n_layers || h >= data.model.n_heads) return null;
    return l * data.model.n_heads + h;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  // ---- tooltip -------------------------------------------------------------
  var tip = document.getElementById("tooltip");
  function hover(node, text) {
    node.appendChild(sv("title", {}, text)); // for screen readers and plain SVG viewers
    node.addEventListener("mousemove", function (ev) {
      tip.hidden = false;
      tip.textContent = typeof text === "function" ? text() : text;
      tip.style.left = ev.clientX + 12 + "px";
      tip.style.top = ev.clientY + 12 + "px";
    });
    node.addEventListener("mouseleave", function () { tip.hidden = true; });
  }

  // White at `mid`, red above up to `hi`, blue below down to `lo`.
  function diverging(v, lo, mid, hi) {
    if (v === null) return "#eee";
    var t = v >= mid ? Math.min(1, (v - mid) / Math.max(hi - mid, 1e-12))
                     : -Math.min(1, (mid - v) / Math.max(mid - lo, 1e-12));
    var a = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? "rgb(255," + a + "," + a + ")" : "rgb(" + a + "," + a + ",255)";
  }
  function greys(v) { // 0 white .. 1 dark red, like CircuitsVis
    var a = Math.round(255 * (1 - Math.max(0, Math.min(1, v))));
    return "rgb(255," + a + "," + a + ")";
  }

  // ---- header and roles ----------------------------------------------------
  function drawSummary() {
    var m = data.model;
    document.getElementById("title").textContent = "libmi report: " + m.title;
    document.title = "libmi report: " + m.title;
    document.getElementById("summary").textContent =
      m.n_layers + " layer" + (m.n_layers === 1 ? "" : "s") + " × " + m.n_heads +
      " heads, d_model " + m.d_model + ", d_head " + m.d_head + ", d_vocab " + m.d_vocab +
      ", n_ctx " + m.n_ctx + " (libmi " + m.version + ")";
  }

  var ROLES = ["previous-token", "duplicate-token", "induction", "copying"];
  function evidence(h) {
    if (h.role === "previous-token")
      return "attention on t−1 " + fmt(h.prev_token_attention) + " (" +
        lift(h.prev_token_attention, h.prev_token_uniform) + " uniform), positional share " +
        fmt(h.prev_token_share) + " (" + lift(h.prev_token_share, h.prev_token_share_chance) + " chance)";
    if (h.role === "duplicate-token")
      return "attention on earlier copies " + fmt(h.duplicate_token_attention) + " (" +
        lift(h.duplicate_token_attention, h.duplicate_token_uniform) + " uniform), QK same-token " +
        fmt(h.qk_same_token);
    if (h.role === "induction") {
      var ps = data.partners.filter(function (p) { return p.layer === h.layer && p.head === h.head; })
        .map(function (p) { return name(p.partner_layer, p.partner_head) + " " + fmt(p.score) + " (z " + fmt(p.z, 1) + ")"; });
      return "induction attention " + fmt(h.induction_attention) + " (" +
        lift(h.induction_attention, h.induction_uniform) + " uniform); K-composition with " +
        (ps.length ? ps.join(", ") : "no previous-token head above chance") +
        "; copying " + fmt(h.ov_copying_score) + ", top-1 " + fmt(h.ov_top1);
    }
    if (h.role === "copying")
      return "OV copying " + fmt(h.ov_copying_score) + ", top-1 " + fmt(h.ov_top1) + " (" +
        lift(h.ov_top1, h.ov_top1_chance) + " chance)";
    return "";
  }
  function drawRoles() {
    var box = clear(document.getElementById("role-lists"));
    ROLES.forEach(function (role) {
      var heads = data.heads.filter(function (h) { return h.role === role; });
      var div = el("div", { "class": "role-list", id: "role-" + role, "data-count": heads.length });
      div.appendChild(el("span", { "class": "role-" + role }, role + " heads: "));
      if (!heads.length) div.appendChild(el("span", { "class": "role-none" }, "none"));
      heads.forEach(function (h, i) {
        var a = el("a", { href: "#head=" + name(h.layer, h.head), "data-head": name(h.layer, h.head),
                          "data-role": role },
                   name(h.layer, h.head));
        div.appendChild(document.createTextNode(i ? "; " : ""));
        div.appendChild(a);
        div.appendChild(el("span", { "class": "evidence" }, " (" + evidence(h) + ")"));
      });
      box.appendChild(div);
    });
    var r = data.rule;
    document.getElementById("rule").textContent =
      "Rule: previous-token, duplicate-token, induction: that attention score ≥ " + r.min_attention +
      " and ≥ " + r.min_attention_lift + "× uniform causal attention on the same sequences; previous-token " +
      "also positional-QK share ≥ " + r.min_prev_share_lift + "× chance; duplicate-token also QK same-token > 0; " +
      "induction also K-composition from an earlier head ≥ chance + " + r.min_k_composition_z + " sd; " +
      "copying: OV Σλ/Σ|λ| ≥ " + r.min_copying_score + " and top-1 accuracy ≥ " + r.min_copying_lift +
      "/d_vocab. One role a head, by precedence induction, previous-token, duplicate-token, copying.";
  }

  // ---- head table ----------------------------------------------------------
  var COLUMNS = [
    { title: "head", left: true, key: function (h) { return h.layer * 1000 + h.head; },
      text: function (h) { return name(h.layer, h.head); } },
    { title: "role", left: true, key: function (h) { return h.role; },
      text: function (h) { return h.role; }, cls: function (h) { return "role-" + h.role; } },
    { title: "OV copying", key: function (h) { return h.ov_copying_score; } },
    { title: "OV top-1", key: function (h) { return h.ov_top1; }, chance: "ov_top1_chance" },
    { title: "QK same-token", key: function (h) { return h.qk_same_token; } },
    { title: "prev share (pos. QK)", key: function (h) { return h.prev_token_share; }, chance: "prev_token_share_chance" },
    { title: "prev-token attn", key: function (h) { return h.prev_token_attention; }, chance: "prev_token_uniform" },
    { title: "dup-token attn", key: function (h) { return h.duplicate_token_attention; }, chance: "duplicate_token_uniform" },
    { title: "induction attn", key: function (h) { return h.induction_attention; }, chance: "induction_uniform" },
    { title: "best K-comp (z)", key: function (h) { return h.k_composition ? h.k_composition.z : null; },
      text: function (h) {
        var k = h.k_composition;
        return k ? name(k.layer, k.head) + " " + fmt(k.score) + " (" + fmt(k.z, 1) + ")" : "–";
      } }
  ];
  var sortColumn = 0, sortDown = false;
  function drawTable() {
    var table = clear(document.getElementById("head-table"));
    var head = el("thead"), tr = el("tr");
    COLUMNS.forEach(function (c, i) {
      var th = el("th", { "class": (c.left ? "left " : "") + (i === sortColumn ? (sortDown ? "sorted-down" : "sorted-up") : ""),
                          "data-column": i }, c.title);
      th.addEventListener("click", function () {
        sortDown = sortColumn === i ? !sortDown : i > 1;
        sortColumn = i;
        drawTable();
      });
      tr.appendChild(th);
    });
    head.appendChild(tr);
    table.appendChild(head);
    var rows = data.heads.slice().sort(function (a, b) {
      var x = COLUMNS[sortColumn].key(a), y = COLUMNS[sortColumn].key(b);
      if (x === null) return 1;
      if (y === null) return -1;
      var c = x < y ? -1 : x > y ? 1 : 0;
      return sortDown ? -c : c;
    });
    var body = el("tbody");
    rows.forEach(function (h) {
      var label = name(h.layer, h.head);
      var row = el("tr", { "data-head": label, "class": label === currentLabel() ? "selected" : "" });
      COLUMNS.forEach(function (c) {
        var td = el("td", { "class": (c.left ? "left " : "") + (c.cls ? c.cls(h) : "") });
        if (c.text) td.textContent = c.text(h);
        else {
          td.textContent = fmt(c.key(h));
          if (c.chance && c.key(h) !== null)
            td.appendChild(el("span", { "class": "lift" }, " " + lift(c.key(h), h[c.chance])));
        }
        row.appendChild(td);
      });
      row.addEventListener("click", function () { select(label, state.dest); });
      body.appendChild(row);
    });
    table.appendChild(body);
  }

  // ---- OV eigenvalues ------------------------------------------------------
  function drawEigen() {
    var grid = clear(document.getElementById("eigen-grid"));
    grid.style.gridTemplateColumns = "repeat(" + Math.min(data.model.n_heads, 6) + ", 190px)";
    var top = 0;
    data.heads.forEach(function (h) {
      h.eigenvalues.forEach(function (z) { top = Math.max(top, Math.hypot(z[0], z[1])); });
    });
    var decades = 3, floor = (top || 1) / Math.pow(10, decades), S = 190, R = 72, c = S / 2;
    data.heads.forEach(function (h) {
      var svg = sv("svg", { width: S, height: S + 24, "class": "eig-plot", "data-head": name(h.layer, h.head) });
      var positive = 0, total = 0;
      h.eigenvalues.forEach(function (z) {
        var m = Math.hypot(z[0], z[1]);
        total += m;
        if (Math.abs(z[1]) <= 1e-9 * top && z[0] > 0) positive += m;
      });
      svg.appendChild(sv("text", { x: c, y: 11, "text-anchor": "middle", "class": "title" },
        name(h.layer, h.head) + " (" + h.role + ")  copying " + fmt(h.ov_copying_score, 2)));
      svg.appendChild(sv("text", { x: c, y: 24, "text-anchor": "middle" },
        "positive real " + fmt(total ? positive / total : 0, 2) + ", top-1 " + fmt(h.ov_top1, 2)));
      var g = sv("g", { transform: "translate(0,22)" });
      for (var d = 1; d <= decades; d++) {
        var r = R * d / decades;
        g.appendChild(sv("circle", { cx: c, cy: c, r: r, fill: "none", stroke: "#ddd" }));
        g.appendChild(sv("text", { x: c + r * 0.72 + 2, y: c - r * 0.72 - 2 }, (floor * Math.pow(10, d)).toPrecision(1)));
      }
      g.appendChild(sv("line", { x1: c - R - 6, y1: c, x2: c + R + 6, y2: c, stroke: "#999" }));
      g.appendChild(sv("line", { x1: c, y1: c - R - 6, x2: c, y2: c + R + 6, stroke: "#999" }));
      g.appendChild(sv("text", { x: c + R + 4, y: c + 10, "text-anchor": "end" }, "Re"));
      g.appendChild(sv("text", { x: c + 3, y: c - R - 1 }, "Im"));
      h.eigenvalues.forEach(function (z) {
        var m = Math.hypot(z[0], z[1]);
        var rr = m > floor ? R * Math.log10(m / floor) / decades : 0, a = Math.atan2(z[1], z[0]);
        var real = Math.abs(z[1]) <= 1e-9 * top && z[0] > 0;
        var p = sv("circle", { cx: c + rr * Math.cos(a), cy: c - rr * Math.sin(a), r: 3,
                               fill: real ? "#d62728" : "#888", "fill-opacity": 0.8, "class": "eig-point" });
        hover(p, "λ = " + z[0].toPrecision(3) + (z[1] >= 0 ? " + " : " − ") + Math.abs(z[1]).toPrecision(3) + "i");
        g.appendChild(p);
      });
      svg.appendChild(g);
      grid.appendChild(svg);
    });
  }

  // ---- composition ----------------------------------------------------------
  function drawComposition() {
    var box = clear(document.getElementById("composition-maps"));
    var comp = data.composition, L = data.model.n_layers, H = data.model.n_heads;
    if (!comp) {
      box.appendChild(el("p", { "class": "note" }, "A 1-layer model has no composition."));
      return;
    }
    var base = comp.baseline;
    box.appendChild(el("p", { "class": "note" },
      "Score of each earlier head (rows, writes) into each later head (columns, reads); white is chance " +
      fmt(base.mean) + " (random matrices of the same shapes, sd " + fmt(base.sd) + "), red above. Hover for values."));
    var writers = [], readers = [];
    for (var l = 0; l < L; l++) for (var h = 0; h < H; h++) {
      if (l < L - 1) writers.push([l, h]);
      if (l > 0) readers.push([l, h]);
    }
    var top = base.mean;
    ["Q", "K", "V"].forEach(function (k) {
      comp[k].forEach(function (row) { row.forEach(function (v) { if (v !== null && v > top) top = v; }); });
    });
    var cell = Math.max(14, Math.min(44, Math.floor(360 / readers.length))), pad = 46;
    var text = cell >= 30;
    ["Q", "K", "V"].forEach(function (k) {
      var div = el("div", { "class": "comp-map", id: "comp-" + k });
      div.appendChild(el("h3", {}, k + "-composition"));
      var svg = sv("svg", { width: pad + cell * readers.length + 4, height: pad + cell * writers.length + 4 });
      readers.forEach(function (r, j) {
        svg.appendChild(sv("text", { x: pad + j * cell + cell / 2, y: pad - 6, "text-anchor": "middle",
                                     transform: readers.length > 8 ? "rotate(-60 " + (pad + j * cell + cell / 2) + " " + (pad - 6) + ")" : "" },
                           name(r[0], r[1])));
      });
      writers.forEach(function (w, i) {
        svg.appendChild(sv("text", { x: pad - 4, y: pad + i * cell + cell / 2 + 3, "text-anchor": "end" }, name(w[0], w[1])));
        readers.forEach(function (r, j) {
          var v = r[0] > w[0] ? comp[k][w[0] * H + w[1]][r[0] * H + r[1]] : null;
          var rect = sv("rect", { x: pad + j * cell, y: pad + i * cell, width: cell - 1, height: cell - 1,
                                  fill: diverging(v, 0, base.mean, top), "class": "comp-cell",
                                  "data-v": v === null ? "" : v });
          hover(rect, name(w[0], w[1]) + " → " + name(r[0], r[1]) + ": " + k + " " +
                (v === null ? "(not later)" : fmt(v, 4) + "  (z " + fmt((v - base.mean) / base.sd, 1) + ")"));
          svg.appendChild(rect);
          if (text && v !== null)
            svg.appendChild(sv("text", { x: pad + j * cell + cell / 2, y: pad + i * cell + cell / 2 + 3,
                                         "text-anchor": "middle", "pointer-events": "none" }, fmt(v, 2)));
        });
      });
      div.appendChild(svg);
      box.appendChild(div);
    });
  }

  // ---- skip-trigrams ---------------------------------------------------------
  function drawTrigrams() {
    var box = clear(document.getElementById("trigram-table"));
    var t = data.trigrams, shown = t.triples.filter(function (x) { return x.above_floor; });
    box.appendChild(el("p", { "class": "note" },
      "Read from each head's token QK circuit (with biases) and token OV circuit, each entry a z-score within its row; " +
      "score = min(z_QK, z_OV). Shown above the noise floor z ≥ " + fmt(t.floor, 2) +
      " = sqrt(2 ln N), N = layers × heads × d_vocab² entries searched (of the best " + t.searched + ")."));
    if (!shown.length) {
      box.appendChild(el("p", { id: "no-trigrams" }, "No skip-trigram reaches the noise floor" +
        (t.triples.length ? " (best score " + fmt(t.triples[0].score, 2) + ")." : ".")));
      return;
    }
    var table = el("table", { id: "trigram-rows" }), tr = el("tr");
    ["head", "src … dst → out", "score", "z_QK", "z_OV"].forEach(function (c, i) {
      tr.appendChild(el("th", { "class": i < 2 ? "left" : "" }, c));
    });
    table.appendChild(el("thead")).appendChild(tr);
    var body = el("tbody");
    shown.forEach(function (x) {
      var row = el("tr");
      row.appendChild(el("td", { "class": "left" }, name(x.layer, x.head)));
      row.appendChild(el("td", { "class": "left" }, x.src + " … " + x.dst + " → " + x.out));
      row.appendChild(el("td", {}, fmt(x.score, 2)));
      row.appendChild(el("td", {}, fmt(x.qk_z, 2)));
      row.appendChild(el("td", {}, fmt(x.ov_z, 2)));
      body.appendChild(row);
    });
    table.appendChild(body);
    box.appendChild(table);
  }

  // ---- attention patterns and attribution ------------------------------------
  function currentLabel() {
    var i = state.head === null ? 0 : state.head;
    return name(Math.floor(i / data.model.n_heads), i % data.model.n_heads);
  }
  function select(label, dest) {
    var parts = ["head=" + label];
    if (dest !== null && dest !== undefined) parts.push("dest=" + dest);
    location.hash = parts.join("&"); // hashchange redraws
  }
  function readFragment() {
    var args = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.split("=");
      if (p.length === 2) args[p[0]] = decodeURIComponent(p[1]);
    });
    var i = headIndex(args.head);
    state.head = i === null ? defaultHead() : i;
    var n = data.prompt ? data.prompt.tokens.length : 0, d = parseInt(args.dest, 10);
    state.dest = isFinite(d) && d >= 0 && d < n ? d : n - 1;
  }
  function defaultHead() { // the first induction head, else previous-token, else L0H0
    for (var r = 0; r < 2; r++)
      for (var i = 0; i < data.heads.length; i++)
        if (data.heads[i].role === ["induction", "previous-token"][r]) return i;
    return 0;
  }
  function tokenText(t) { return JSON.stringify(data.prompt.tokens[t]).slice(1, -1); }

  function drawPicker() {
    var box = clear(document.getElementById("head-picker"));
    data.heads.forEach(function (h, i) {
      var b = el("button", { "class": "head-button" + (i === state.head ? " selected" : ""),
                             "data-head": name(h.layer, h.head), title: h.role }, name(h.layer, h.head));
      b.addEventListener("click", function () { select(name(h.layer, h.head), state.dest); });
      b.addEventListener("mouseenter", function () { drawPattern(i); });
      b.addEventListener("mouseleave", function () { drawPattern(state.head); });
      box.appendChild(b);
    });
  }

  function drawPattern(index) {
    var box = clear(document.getElementById("pattern"));
    var p = data.prompt, n = p.tokens.length, rows = p.patterns[index];
    var label = name(Math.floor(index / data.model.n_heads), index % data.model.n_heads);
    var cell = Math.max(8, Math.min(22, Math.floor(520 / n))), pad = 70;
    var svg = sv("svg", { width: pad + n * cell + 4, height: pad + n * cell + 4, "data-head": label, id: "pattern-svg" });
    for (var t = 0; t < n; t++) {
      svg.appendChild(sv("text", { x: pad - 4, y: pad + t * cell + cell / 2 + 3, "text-anchor": "end" }, t + " " + tokenText(t)));
      var x = pad + t * cell + cell / 2;
      svg.appendChild(sv("text", { x: x, y: pad - 4, transform: "rotate(-60 " + x + " " + (pad - 4) + ")" }, tokenText(t) + " " + t));
    }
    rows.forEach(function (row, t) {
      row.forEach(function (v, s) {
        var rect = sv("rect", { x: pad + s * cell, y: pad + t * cell, width: cell, height: cell, fill: greys(v),
                                "class": "pat-cell" + (t === state.dest ? " dest-row" : ""),
                                "data-t": t, "data-s": s, "data-v": v });
        hover(rect, label + ": destination " + t + " '" + tokenText(t) + "' ← source " + s + " '" + tokenText(s) + "': " + fmt(v));
        rect.addEventListener("click", function () { select(currentLabel(), t); });
        svg.appendChild(rect);
      });
    });
    svg.appendChild(sv("text", { x: 2, y: 12 }, label));
    box.appendChild(svg);
  }

  function drawDest() {
    var p = data.prompt, t = state.dest, row = p.patterns[state.head][t];
    document.getElementById("pattern-title").textContent = currentLabel() + ": attention from destination " +
      t + " '" + tokenText(t) + "' (click a token or a row to move it)";
    var box = clear(document.getElementById("dest-strip"));
    box.setAttribute("data-head", currentLabel());
    box.setAttribute("data-dest", t);
    p.tokens.forEach(function (_, s) {
      var v = s <= t ? row[s] : 0;
      var span = el("span", { "class": "dest-token" + (s === t ? " dest" : ""), "data-s": s,
                              style: "background:" + greys(v) }, tokenText(s));
      span.title = "source " + s + ": " + fmt(v);
      span.addEventListener("click", function () { select(currentLabel(), s); });
      box.appendChild(span);
    });
  }

  function drawAttribution() {
    var a = data.prompt.attribution[state.dest], box = clear(document.getElementById("attribution-bars"));
    document.getElementById("attribution-title").textContent = "Logit of the top prediction '" +
      JSON.stringify(a.token_str).slice(1, -1) + "' at position " + a.position + ": " + fmt(a.total, 2) +
      " (paths of up to " + data.prompt.max_order + " heads)";
    var items = a.parts.map(function (x) { return x; });
    if (a.rest_count) items.push({ label: a.rest_count + " other parts", kind: "rest", value: a.rest });
    var top = 0;
    items.forEach(function (x) { top = Math.max(top, Math.abs(x.value)); });
    var W = 420, lw = 140, bar = 16, mid = lw + (W - lw) / 2, scale = (W - lw) / 2 / (top || 1) * 0.8;
    var svg = sv("svg", { width: W + 60, height: items.length * (bar + 3) + 8, id: "attribution-svg", "data-position": a.position });
    items.forEach(function (x, i) {
      var y = 4 + i * (bar + 3), w = Math.abs(x.value) * scale;
      svg.appendChild(sv("text", { x: lw - 6, y: y + bar - 4, "text-anchor": "end" }, x.label));
      var r = sv("rect", { x: x.value >= 0 ? mid : mid - w, y: y, width: w, height: bar,
                           fill: KIND_COLOUR[x.kind] || "#ccc", "class": "attr-bar" });
      hover(r, x.label + " (" + x.kind + "): " + fmt(x.value, 3));
      svg.appendChild(r);
      svg.appendChild(sv("text", { x: x.value >= 0 ? mid + w + 3 : mid - w - 3, y: y + bar - 4,
                                   "text-anchor": x.value >= 0 ? "start" : "end" }, fmt(x.value, 2)));
    });
    svg.appendChild(sv("line", { x1: mid, y1: 0, x2: mid, y2: items.length * (bar + 3) + 4, stroke: "#555" }));
    box.appendChild(svg);
    var legend = el("div", { "class": "legend" });
    ["direct", "head", "virtual", "bias"].forEach(function (k) {
      var s = el("span");
      s.appendChild(el("i", { style: "background:" + KIND_COLOUR[k] }));
      s.appendChild(document.createTextNode(k === "virtual" ? "virtual head" : k));
      legend.appendChild(s);
    });
    box.appendChild(legend);
  }

  function drawPrompt() {
    if (!data.prompt) {
      document.getElementById("prompt-note").textContent =
        "No prompt given: mi report --html FILE --prompt TEXT (or --ids 1,2,3) adds every head's attention pattern.";
      return;
    }
    document.getElementById("prompt-note").textContent = "Prompt of " + data.prompt.tokens.length +
      " tokens. Hover a head to preview its pattern, click it to keep it; rows are destinations, columns sources.";
    drawPicker();
    drawPattern(state.head);
    drawDest();
    drawAttribution();
  }

  function redraw() {
    readFragment();
    drawTable();
    drawPrompt();
  }

  function fail(message) {
    document.body.setAttribute("data-status", "error: " + message);
    document.getElementById("status-line").textContent = "error: " + message;
  }
  window.addEventListener("error", function (ev) { fail(ev.message); });

  try {
    data = JSON.parse(document.getElementById("mi-data").textContent);
    drawSummary();
    drawRoles();
    readFragment();
    drawTable();
    drawEigen();
    drawComposition();
    drawTrigrams();
    drawPrompt();
    window.addEventListener("hashchange", redraw);
    document.getElementById("status-line").textContent = "";
    document.body.setAttribute("data-status", "ok");
  } catch (e) {
    fail(e && e.message ? e.message : String(e));
  }
})();
