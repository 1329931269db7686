#!/usr/bin/env python3
"""The HTML report in a real browser (headless Chromium), on the shipped models.

usage: check_html_report.py MI_BINARY MODELS_DIR OUTPUT_DIR

Writes each model's page with `mi report --html`, loads it in
`chromium --headless` with a URL fragment that picks a head and a
destination, and reads back the DOM the page's script built
(`--dump-dom`): the script finished without an error (it sets
<body data-status="ok">, or "error: ..." from a window error handler),
the head table, role lists, eigenvalue plots, composition heatmaps,
attention pattern and attribution are there with as many cells and heads as
the model has, the fragment's head and destination are the ones shown, and
the induction head the card names shows the induction stripe. Screenshots go
to OUTPUT_DIR. Expectations come from each model's card.json. Without
chromium it fails: the README's first command installs it.
"""
import html.parser
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

MI, MODELS, OUT = (sys.argv[1:4] if len(sys.argv) >= 4 else ("mi", "examples/models", "."))
IND = os.path.join(MODELS, "induction-2l")
SKIP = os.path.join(MODELS, "skip-trigram-1l")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPEAT = 7  # tokens in the repeated span of the prompt


def card(model_dir):
    with open(os.path.join(model_dir, "card.json")) as f:
        return json.load(f)


def vocab(model_dir):
    with open(os.path.join(model_dir, "vocab.txt")) as f:
        return [line.rstrip("\n") for line in f]


class Dom(html.parser.HTMLParser):
    """Every element as (tag, attributes, [text]), in document order."""

    def __init__(self, text):
        super().__init__()
        self.elements, self.stack = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        e = (tag, dict(attrs), [])
        self.elements.append(e)
        if tag not in ("meta", "br", "img", "input", "link", "circle", "rect", "line"):
            self.stack.append(e)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), []))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for e in self.stack:
            e[2].append(data)

    def by_class(self, cls):
        return [e for e in self.elements if cls in e[1].get("class", "").split()]

    def by_id(self, ident):
        return next(e for e in self.elements if e[1].get("id") == ident)


def chromium(url, *extra):
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", f"--user-data-dir={profile}",
                            "--virtual-time-budget=5000", *extra, url],
                           capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def page(path, fragment, shot=None):
    url = "file://" + os.path.abspath(path) + fragment
    if shot:
        chromium(url, "--window-size=1280,2600", f"--screenshot={shot}")
        if not os.path.getsize(shot):
            raise AssertionError(f"empty screenshot {shot}")
    return Dom(chromium(url, "--dump-dom"))


def write_report(model_dir, path, *extra):
    start = time.monotonic()
    r = subprocess.run([MI, "report", os.path.join(model_dir, "model.safetensors"), "--html",
                        path, *extra], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"mi report --html failed: {r.stderr}")
    print(f"mi report --html {os.path.basename(model_dir)}: {time.monotonic() - start:.2f} s")


def heads_named(c, key):
    return {f"L{h['layer']}H{h['head']}" for h in c["found"].get(key, [])}


class InductionPage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.card = card(IND)
        words = vocab(IND)
        span = random.Random(0).sample(range(1, len(words)), REPEAT)
        cls.tokens = [0] + span + span  # <bos> X X
        cls.path = os.path.join(OUT, "induction-2l.html")
        write_report(IND, cls.path, "--prompt", " ".join(words[t] for t in cls.tokens))
        with open(cls.path) as f:
            cls.text = f.read()
        ind = cls.card["found"]["induction_heads"][0]
        cls.head = f"L{ind['layer']}H{ind['head']}"
        cls.dest = len(cls.tokens) - 1
        cls.dom = page(cls.path, f"#head={cls.head}&dest={cls.dest}",
                       os.path.join(OUT, "induction-2l.png"))

    def test_script_ran_without_error(self):
        body = next(e for e in self.dom.elements if e[0] == "body")
        self.assertEqual(body[1].get("data-status"), "ok")

    def test_self_contained(self):
        # No script, style sheet or image is fetched: the only URL in the
        # page is the SVG namespace the script creates elements in.
        for needle in ("<link", " src=", "@import", "url("):
            self.assertNotIn(needle, self.text)
        urls = {w for w in self.text.replace('"', " ").split() if "://" in w}
        self.assertEqual(urls, {"http://www.w3.org/2000/svg"})

    def test_head_table_and_roles(self):
        cfg = self.card["config"]
        L, H = cfg["n_layers"], cfg["n_heads"]
        rows = [e for e in self.dom.elements if e[0] == "tr" and "data-head" in e[1]]
        self.assertEqual(sorted(r[1]["data-head"] for r in rows),
                         sorted(f"L{l}H{h}" for l in range(L) for h in range(H)))
        for role, key in (("previous-token", "previous_token_heads"),
                          ("induction", "induction_heads"), ("copying", "copying_heads"),
                          ("duplicate-token", "duplicate_token_heads")):
            box = self.dom.by_id(f"role-{role}")
            links = {e[1]["data-head"] for e in self.dom.elements
                     if e[0] == "a" and e[1].get("data-role") == role}
            self.assertEqual(int(box[1]["data-count"]), len(heads_named(self.card, key)), role)
            self.assertEqual(links, heads_named(self.card, key), role)

    def test_every_picture(self):
        cfg = self.card["config"]
        L, H = cfg["n_layers"], cfg["n_heads"]
        self.assertEqual(len(self.dom.by_class("eig-plot")), L * H)
        # d_head non-zero eigenvalues a head (d_head < d_vocab).
        self.assertEqual(len(self.dom.by_class("eig-point")), L * H * cfg["d_head"])
        self.assertEqual(len(self.dom.by_class("comp-cell")), 3 * ((L - 1) * H) ** 2)
        # The card's K-composition of each pair, in the heatmap (hover values).
        k = [float(e[1]["data-v"]) for e in self.dom.by_class("comp-cell")][16:32]
        want = [x for row in self.card["found"]["k_composition"] for x in row]
        for got, w in zip(k, want):
            self.assertAlmostEqual(got, w, delta=2e-3)
        n = len(self.tokens)
        self.assertEqual(len(self.dom.by_class("pat-cell")), n * (n + 1) // 2)
        self.assertEqual(len(self.dom.by_class("dest-token")), n)
        self.assertTrue(self.dom.by_class("attr-bar"))
        self.assertTrue(self.dom.by_id("no-trigrams"))  # nothing planted: none above the floor

    def test_fragment_picks_head_and_destination(self):
        self.assertEqual(self.dom.by_id("pattern-svg")[1]["data-head"], self.head)
        strip = self.dom.by_id("dest-strip")[1]
        self.assertEqual((strip["data-head"], int(strip["data-dest"])), (self.head, self.dest))
        self.assertEqual(int(self.dom.by_id("attribution-svg")[1]["data-position"]), self.dest)
        rows = {int(e[1]["data-t"]) for e in self.dom.by_class("dest-row")}
        self.assertEqual(rows, {self.dest})
        picked = [e[1]["data-head"] for e in self.dom.by_class("head-button")
                  if "selected" in e[1]["class"]]
        self.assertEqual(picked, [self.head])

    def pattern(self, dom):
        return {(int(e[1]["data-t"]), int(e[1]["data-s"])): float(e[1]["data-v"])
                for e in dom.by_class("pat-cell")}

    def test_induction_stripe(self):
        # In the repeat, destination t attends to t - REPEAT + 1: the token
        # after the previous copy of its own token. The card measured this
        # head's induction score at ~0.9 on such sequences.
        cells = self.pattern(self.dom)
        second = range(1 + REPEAT, len(self.tokens))
        stripe = [cells[t, t - REPEAT + 1] for t in second]
        self.assertGreater(sum(stripe) / len(stripe), 0.5, stripe)
        wins = sum(cells[t, t - REPEAT + 1] == max(cells[t, s] for s in range(t + 1))
                   for t in second)
        self.assertGreaterEqual(wins, 0.8 * len(second))

    def test_previous_token_head(self):
        prev = self.card["found"]["previous_token_heads"][0]
        label = f"L{prev['layer']}H{prev['head']}"
        dom = page(self.path, f"#head={label}&dest=3", os.path.join(OUT, "induction-2l-prev.png"))
        self.assertEqual(dom.by_id("pattern-svg")[1]["data-head"], label)
        cells = self.pattern(dom)
        prev_share = [cells[t, t - 1] for t in range(1, len(self.tokens))]
        self.assertGreater(sum(prev_share) / len(prev_share), 0.5)


class SkipTrigramPage(unittest.TestCase):
    def test_trigrams_and_no_prompt(self):
        c = card(SKIP)
        path = os.path.join(OUT, "skip-trigram-1l.html")
        write_report(SKIP, path)
        dom = page(path, "", os.path.join(OUT, "skip-trigram-1l.png"))
        body = next(e for e in dom.elements if e[0] == "body")
        self.assertEqual(body[1].get("data-status"), "ok")
        self.assertEqual(len(dom.by_class("comp-cell")), 0)  # one layer: no composition
        self.assertEqual(len(dom.by_class("pat-cell")), 0)   # no prompt
        rows = [e for e in dom.elements if e[0] == "tr"][1:]
        text = " ".join("".join(e[2]) for e in dom.elements if e[0] == "td")
        planted = [f"{t['src']} … {t['dst']} → {t['out']}" for t in c["planted"]["skip_trigrams"]]
        self.assertGreaterEqual(sum(p in text for p in planted), len(planted) // 2)
        self.assertTrue(rows)
        links = {e[1]["data-head"] for e in dom.elements
                 if e[0] == "a" and e[1].get("data-role") == "copying"}
        self.assertEqual(links, heads_named(c, "copying_heads"))


if __name__ == "__main__":
    if CHROMIUM is None:
        print("chromium not found: the README's first command installs it")
        sys.exit(1)
    os.makedirs(OUT, exist_ok=True)
    unittest.main(argv=sys.argv[:1])
