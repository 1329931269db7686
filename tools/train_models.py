#!/usr/bin/python3
"""Train the two small example models that ship in examples/models/.

    skip-trigram-1l  1 layer, 4 heads, attention only, word vocabulary, trained
                     on a synthetic corpus with 16 planted skip-trigrams
                     ("keep ... in -> mind") and copying of earlier tokens.
    induction-2l     2 layers, 4 heads, attention only, trained on random
                     tokens with repeated spans, so that an induction head
                     forms (a layer-0 previous-token head K-composing with a
                     layer-1 copying head).

Each model directory gets model.safetensors (TransformerLens names, float32),
vocab.txt (one token a line, line number = id), reference_logits.json (test
sequences and their logits, for checking libmi's forward pass), card.json
(planted and found facts, for tests to read) and CARD.md.

Run with Debian's interpreter (apt-get install python3-torch):

    /usr/bin/python3 tools/train_models.py [--only NAME] [--out DIR]

It uses one thread and fixed seeds; on the same machine and torch build a
rerun writes byte-identical files. It is not run by CI.

The model is written here in plain torch, not nn.Transformer, so that every
saved tensor means exactly what its name says:

    resid = W_E[tok] + W_pos[pos]
    per layer:  x = LN(resid; ln1.w, ln1.b, eps 1e-5)
                q = x W_Q[h] + b_Q[h]   (k, v likewise)
                pattern = softmax(causal(q k^T / sqrt(d_head)))
                resid += sum_h (pattern v) W_O[h] + b_O
    logits = LN(resid; ln_final.w, ln_final.b) W_U + b_U
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch

LN_EPS = 1e-5
LOG_EVERY = 500
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# The model: parameters as a dict of tensors named as TransformerLens names
# them, and one forward pass used both for training (float32) and for the
# reference logits (float64).

def init_params(cfg, gen, pos_std):
    """Random parameters for cfg, drawn from the torch generator gen; W_pos
    with standard deviation pos_std (W_E: 1)."""
    V, D, H, dh, L, T = (cfg[k] for k in
                         ("d_vocab", "d_model", "n_heads", "d_head",
                          "n_layers", "n_ctx"))

    def normal(shape, std):
        return torch.randn(*shape, generator=gen) * std

    p = {"embed.W_E": normal((V, D), 1.0),
         "pos_embed.W_pos": normal((T, D), pos_std)}
    for l in range(L):
        b = "blocks.%d." % l
        p[b + "ln1.w"] = torch.ones(D)
        p[b + "ln1.b"] = torch.zeros(D)
        for n in ("W_Q", "W_K", "W_V"):
            p[b + "attn." + n] = normal((H, D, dh), 1.0 / math.sqrt(D))
        p[b + "attn.W_O"] = normal((H, dh, D), 1.0 / math.sqrt(H * dh))
        for n in ("b_Q", "b_K", "b_V"):
            p[b + "attn." + n] = torch.zeros(H, dh)
        p[b + "attn.b_O"] = torch.zeros(D)
    p["ln_final.w"] = torch.ones(D)
    p["ln_final.b"] = torch.zeros(D)
    p["unembed.W_U"] = normal((D, V), 1.0 / math.sqrt(D))
    p["unembed.b_U"] = torch.zeros(V)
    return p


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * w + b


def forward(p, cfg, tokens, return_patterns=False):
    """Logits [batch, pos, vocab] for tokens [batch, pos]; optionally the
    attention patterns, one [batch, head, query, key] tensor a layer."""
    T = tokens.shape[1]
    dh = cfg["d_head"]
    resid = p["embed.W_E"][tokens] + p["pos_embed.W_pos"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    patterns = []
    for l in range(cfg["n_layers"]):
        b = "blocks.%d." % l
        x = layer_norm(resid, p[b + "ln1.w"], p[b + "ln1.b"])
        q = torch.einsum("btd,hde->bhte", x, p[b + "attn.W_Q"]) \
            + p[b + "attn.b_Q"][None, :, None, :]
        k = torch.einsum("btd,hde->bhte", x, p[b + "attn.W_K"]) \
            + p[b + "attn.b_K"][None, :, None, :]
        v = torch.einsum("btd,hde->bhte", x, p[b + "attn.W_V"]) \
            + p[b + "attn.b_V"][None, :, None, :]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        scores = scores.masked_fill(causal, float("-inf"))
        pattern = torch.softmax(scores, dim=-1)
        patterns.append(pattern)
        z = pattern @ v
        resid = resid + torch.einsum("bhte,hed->btd", z, p[b + "attn.W_O"]) \
            + p[b + "attn.b_O"]
    x = layer_norm(resid, p["ln_final.w"], p["ln_final.b"])
    logits = x @ p["unembed.W_U"] + p["unembed.b_U"]
    return (logits, patterns) if return_patterns else logits


def train(p, cfg, batches, steps, lr, weight_decay, log):
    """AdamW on next-token cross-entropy over every position but the last,
    with linear warm-up and cosine decay. batches(step) gives the tokens."""
    params = list(p.values())
    for t in params:
        t.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = steps // 20
    history = []
    t0 = time.time()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else \
            0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        tokens = batches(step)
        logits = forward(p, cfg, tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        if step % LOG_EVERY == 0 or step == steps - 1:
            log("  step %5d  loss %.4f" % (step, loss.item()))
    log("  trained in %.0f s" % (time.time() - t0))
    for t in params:
        t.requires_grad_(False)
    return history


# ---------------------------------------------------------------------------
# Files. safetensors is written by hand (Debian has no safetensors package):
# 8-byte little-endian header length, a JSON header, then the tensors as raw
# little-endian float32, contiguous in header order with no holes.

def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        data = np.ascontiguousarray(t.detach().numpy(), dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)    # keeps the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def read_safetensors(path):
    """Reads back what write_safetensors wrote, checking the layout."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    metadata = header.pop("__metadata__")
    out = {}
    end = 0
    for name, info in header.items():
        b, e = info["data_offsets"]
        assert info["dtype"] == "F32" and b == end, name
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        assert e - b == 4 * count, name
        arr = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4")
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
        end = e
    assert 8 + n + end == len(raw), "trailing bytes"
    return out, metadata


def save_model(out_dir, name, p, cfg, seed, vocab):
    """model.safetensors (TransformerLens names, the config in __metadata__,
    read back to check) and vocab.txt (one token a line) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    metadata = {k: str(v) for k, v in cfg.items()}
    metadata.update({"act_fn": "none", "attn_only": "true",
                     "normalization_type": "LN", "positional_embedding_type":
                     "standard", "eps": str(LN_EPS), "model_name": name,
                     "seed": str(seed), "trained_by": "tools/train_models.py"})
    write_safetensors(os.path.join(out_dir, "model.safetensors"), p, metadata)
    back, _ = read_safetensors(os.path.join(out_dir, "model.safetensors"))
    assert all(torch.equal(back[k], p[k]) for k in p)
    with open(os.path.join(out_dir, "vocab.txt"), "w") as fh:
        fh.write("".join(w + "\n" for w in vocab))


def write_card(path, lines):
    """CARD.md: the model's own lines, then what reference_logits.json is."""
    lines = lines + [
        "",
        "`reference_logits.json` holds test sequences with their logits "
        "(float64 forward pass over these float32 weights) to check a "
        "forward pass against.",
        "",
    ]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def write_reference_logits(path, p, cfg, sequences, note):
    """Logits of the saved float32 weights, computed in float64, for each
    test sequence; 9 significant digits (float32 weights, so enough)."""
    p64 = {k: v.double() for k, v in p.items()}
    out = {"note": note, "sequences": []}
    for seq in sequences:
        tokens = torch.tensor([seq])
        logits64 = forward(p64, cfg, tokens)[0]
        logits32 = forward(p, cfg, tokens)[0]
        out["sequences"].append({
            "tokens": list(seq),
            "max_abs_diff_float32_forward": float("%.3g" % (
                logits32.double() - logits64).abs().max().item()),
            "logits": [[float("%.9g" % v) for v in row]
                       for row in logits64.tolist()]})
    write_json(path, out)


# ---------------------------------------------------------------------------
# Analysis in float64 on the saved weights: fold LayerNorm the way
# TransformerLens's fold_ln does, optionally centre, then read circuits.

def fold_ln(p, cfg, center=False):
    f = {k: v.double().clone() for k, v in p.items()}
    for l in range(cfg["n_layers"]):
        b = "blocks.%d." % l
        w, bias = f.pop(b + "ln1.w"), f.pop(b + "ln1.b")
        for n in ("Q", "K", "V"):
            W = f[b + "attn.W_" + n]
            f[b + "attn.b_" + n] = f[b + "attn.b_" + n] + \
                torch.einsum("d,hde->he", bias, W)
            f[b + "attn.W_" + n] = W * w[None, :, None]
    w, bias = f.pop("ln_final.w"), f.pop("ln_final.b")
    f["unembed.b_U"] = f["unembed.b_U"] + bias @ f["unembed.W_U"]
    f["unembed.W_U"] = f["unembed.W_U"] * w[:, None]
    if center:
        def cr(x):  # remove the mean over d_model (the last axis)
            return x - x.mean(-1, keepdim=True)
        f["embed.W_E"] = cr(f["embed.W_E"])
        f["pos_embed.W_pos"] = cr(f["pos_embed.W_pos"])
        for l in range(cfg["n_layers"]):
            b = "blocks.%d.attn." % l
            for n in ("W_Q", "W_K", "W_V"):
                f[b + n] = f[b + n] - f[b + n].mean(1, keepdim=True)
            f[b + "W_O"] = cr(f[b + "W_O"])
            f[b + "b_O"] = cr(f[b + "b_O"])
        W_U = f["unembed.W_U"]
        W_U = W_U - W_U.mean(0, keepdim=True)
        f["unembed.W_U"] = cr(W_U)
        f["unembed.b_U"] = cr(f["unembed.b_U"])
    return f


def head(f, l, h, name):
    return f["blocks.%d.attn.%s" % (l, name)][h]


def token_qk(f, l, h, with_bias):
    """Query token x key token scores. With biases, the score of key k for
    query q is (e_q W_Q + b_Q)(e_k W_K + b_K)^T; terms constant along a row
    do not change which keys rank first, but b_Q (e_k W_K)^T does."""
    E = f["embed.W_E"]
    q = E @ head(f, l, h, "W_Q")
    k = E @ head(f, l, h, "W_K")
    if with_bias:
        q = q + head(f, l, h, "b_Q")
        k = k + head(f, l, h, "b_K")
    return q @ k.T


def token_ov(f, l, h):
    return f["embed.W_E"] @ head(f, l, h, "W_V") @ head(f, l, h, "W_O") \
        @ f["unembed.W_U"]


def copying_score(f, l, h):
    """sum(lambda) / sum(|lambda|) over the eigenvalues of the token OV
    circuit, from the d_head x d_head matrix W_O W_U W_E W_V (same nonzero
    eigenvalues as W_E W_V W_O W_U)."""
    small = head(f, l, h, "W_O") @ f["unembed.W_U"] @ f["embed.W_E"] \
        @ head(f, l, h, "W_V")
    lam = np.linalg.eigvals(small.numpy())
    return float(lam.sum().real / np.abs(lam).sum())


def rank_in_row(row, index):
    """0-based rank of row[index] among row, largest first: how many
    entries are strictly larger."""
    return int((row > row[index]).sum().item())


def rounded(x, digits=4):
    return float(round(x, digits))


# ---------------------------------------------------------------------------
# Model 1: skip-trigrams and copying.

# Eight source verbs, eight particles, each verb with two particles and each
# particle with two verbs, so neither token alone predicts the output: the
# model must attend from the particle back to the verb (QK) and move the
# verb's information to the output (OV).
SKIP_TRIGRAMS = [
    ("keep", "in", "mind"), ("keep", "at", "bay"),
    ("put", "in", "place"), ("put", "on", "hold"),
    ("look", "at", "stars"), ("look", "out", "window"),
    ("bring", "to", "light"), ("bring", "back", "memories"),
    ("take", "to", "heart"), ("take", "on", "responsibility"),
    ("turn", "off", "lights"), ("turn", "up", "volume"),
    ("give", "up", "hope"), ("give", "back", "change"),
    ("call", "off", "search"), ("call", "out", "names"),
]

FILLER_WORDS = """
the of and a that is was he for it with as his be by had not are but from
or have an they which one you were her all she there would their we him been
has when who will more no if so said what its about than into them can only
other new some could time these two may then do first any my now such like
our over man me even most made after also did many before must through years
where much your way well down should because each just those people how too
little state good very make world still own see men work long get here
between both life being under never day same another know while last might
us great old year off come since against go came right used three states
himself few house use during without again place american around however
home small found mrs thought went say part once general high upon school
every does got united left number course war until always away something
fact though water less public almost hand enough far took head yet
government system better set told nothing night end why called didn find
going asked later knew point next program city business give group toward
young days let room president side social given present several order
national possible rather second face per among form important often things
early white case john become large big need four within felt along children
saw best church ever least power development light thing seemed family
interest want members others mind country area
""".split()

SOURCES = sorted({a for a, _, _ in SKIP_TRIGRAMS})
PARTICLES = sorted({b for _, b, _ in SKIP_TRIGRAMS})
OUTPUTS = [c for _, _, c in SKIP_TRIGRAMS]


def skip_trigram_vocab():
    special = set(SOURCES) | set(PARTICLES) | set(OUTPUTS)
    filler = []
    for w in FILLER_WORDS:
        if w not in special and w not in filler:
            filler.append(w)
    vocab = ["<bos>"] + SOURCES + PARTICLES + OUTPUTS + filler
    assert len(set(vocab)) == len(vocab)
    return vocab, filler


def skip_trigram_sequence(rng, ids, filler_ids, length):
    """One sequence of `length` tokens: <bos>, filler words (each, with
    probability 0.3, a repeat of an earlier filler word), one or two
    skip-trigrams "A ... B C" with 1 to 8 words between A and B, and in half
    of them a decoy source verb paired with no B of the sequence between A
    and B."""
    seq = [ids["<bos>"]] + [int(x) for x in
                            rng.choice(filler_ids, size=length - 1)]
    for t in range(2, length):
        if rng.random() < 0.3:
            seq[t] = seq[int(rng.integers(1, t))]
    chosen = [SKIP_TRIGRAMS[int(rng.integers(len(SKIP_TRIGRAMS)))]]
    if rng.random() < 0.5:
        # A second trigram whose B is not paired with the first A, so that
        # the first A is a distractor for it and not a second answer.
        while True:
            t = SKIP_TRIGRAMS[int(rng.integers(len(SKIP_TRIGRAMS)))]
            if (chosen[0][0], t[1]) not in PAIRS:
                break
        chosen.append(t)
    decoys = [s for s in SOURCES
              if not any((s, b) in PAIRS for _, b, _ in chosen)]
    # Each trigram gets its own stretch of the sequence, so that a second
    # one never sits inside the first.
    stretch = (length - 1) // len(chosen)
    for i, (a, b, c) in enumerate(chosen):
        gap = int(rng.integers(2, 10))
        start = 1 + i * stretch + int(rng.integers(0, stretch - gap - 1))
        seq[start] = ids[a]
        seq[start + gap] = ids[b]
        seq[start + gap + 1] = ids[c]
        if gap >= 3 and rng.random() < 0.5:
            d = decoys[int(rng.integers(len(decoys)))]
            seq[start + int(rng.integers(1, gap))] = ids[d]
    return seq


PAIRS = {(a, b) for a, b, _ in SKIP_TRIGRAMS}


def train_skip_trigram(out_dir, log):
    seed = 1234
    vocab, filler = skip_trigram_vocab()
    ids = {w: i for i, w in enumerate(vocab)}
    filler_ids = np.array([ids[w] for w in filler])
    cfg = {"d_vocab": len(vocab), "d_model": 128, "n_heads": 4, "d_head": 32,
           "n_layers": 1, "n_ctx": 32}
    hp = {"seed": seed, "steps": 4000, "batch_size": 64, "lr": 2e-3,
          "weight_decay": 0.05, "pos_init_std": 0.1,
          "optimizer": "AdamW (betas 0.9, 0.999)",
          "schedule": "linear warm-up over 5% of steps, then cosine to 0"}
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    p = init_params(cfg, gen, hp["pos_init_std"])
    rng = np.random.default_rng(seed)

    def batches(step):
        return torch.tensor([skip_trigram_sequence(rng, ids, filler_ids,
                                                   cfg["n_ctx"] + 1)
                             for _ in range(hp["batch_size"])])

    log("skip-trigram-1l: vocab %d, %s" % (len(vocab), cfg))
    history = train(p, cfg, batches, hp["steps"], hp["lr"],
                    hp["weight_decay"], log)

    # Held-out evaluation: loss overall and on the planted output tokens.
    eval_rng = np.random.default_rng(seed + 1)
    tokens = torch.tensor([skip_trigram_sequence(eval_rng, ids, filler_ids,
                                                 cfg["n_ctx"] + 1)
                           for _ in range(512)])
    logits = forward(p, cfg, tokens[:, :-1])
    target = tokens[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), target, reduction="none")
    out_ids = torch.tensor([ids[c] for c in OUTPUTS])
    is_out = torch.isin(target, out_ids)
    correct = logits.argmax(-1) == target

    f = fold_ln(p, cfg)
    fc = fold_ln(p, cfg, center=True)
    trigrams = []
    for a, b, c in SKIP_TRIGRAMS:
        t = {"src": a, "dst": b, "out": c}
        for tag, g in (("fold_ln", f), ("fold_ln_center", fc)):
            qk_nb = [rank_in_row(token_qk(g, 0, h, False)[ids[b]], ids[a])
                     for h in range(cfg["n_heads"])]
            qk_b = [rank_in_row(token_qk(g, 0, h, True)[ids[b]], ids[a])
                    for h in range(cfg["n_heads"])]
            ov = [rank_in_row(token_ov(g, 0, h)[ids[a]], ids[c])
                  for h in range(cfg["n_heads"])]
            t[tag] = {"qk_rank_no_bias": qk_nb, "qk_rank_with_bias": qk_b,
                      "ov_rank": ov}
        trigrams.append(t)
    heads = []
    for h in range(cfg["n_heads"]):
        heads.append({"layer": 0, "head": h,
                      "copying_score": rounded(copying_score(f, 0, h)),
                      "copying_score_centered": rounded(copying_score(fc, 0, h))})

    def best(t, tag, key):
        return min(t[tag][key])

    summary = {}
    for tag in ("fold_ln", "fold_ln_center"):
        summary[tag] = {
            key: sum(best(t, tag, key) < 5 for t in trigrams)
            for key in ("qk_rank_no_bias", "qk_rank_with_bias", "ov_rank")}
    # The trigram's head: the one whose OV ranks C highest for A, and then
    # the QK rank in that same head (a single head must do both).
    for t in trigrams:
        for tag in ("fold_ln", "fold_ln_center"):
            d = t[tag]
            h = min(range(cfg["n_heads"]),
                    key=lambda h: (d["qk_rank_with_bias"][h] + d["ov_rank"][h]))
            d["best_head"] = h
    summary["same_head_top5_with_bias"] = {
        tag: sum(t[tag]["qk_rank_with_bias"][t[tag]["best_head"]] < 5 and
                 t[tag]["ov_rank"][t[tag]["best_head"]] < 5 for t in trigrams)
        for tag in ("fold_ln", "fold_ln_center")}

    results = {
        "final_train_loss_mean_last_100": rounded(float(np.mean(history[-100:]))),
        "eval_loss": rounded(nll.mean().item()),
        "eval_loss_on_planted_outputs": rounded(nll[is_out].mean().item()),
        "eval_accuracy_on_planted_outputs": rounded(
            correct[is_out].float().mean().item()),
        "eval_sequences": 512,
    }
    save_model(out_dir, "skip-trigram-1l", p, cfg, seed, vocab)

    test_rng = np.random.default_rng(seed + 2)
    sequences = [skip_trigram_sequence(test_rng, ids, filler_ids,
                                       cfg["n_ctx"]) for _ in range(2)]
    sequences.append([ids[w] for w in
                      "<bos> keep the children in mind".split()])
    write_reference_logits(
        os.path.join(out_dir, "reference_logits.json"), p, cfg, sequences,
        "logits[pos][token] of model.safetensors (float32 weights) computed "
        "in float64 by tools/train_models.py's forward pass; LN eps 1e-5")

    card = {
        "model": "skip-trigram-1l",
        "config": cfg,
        "training": dict(hp, **results),
        "planted": {
            "skip_trigrams": [{"src": a, "dst": b, "out": c}
                              for a, b, c in SKIP_TRIGRAMS],
            "copying": "30% of filler positions repeat an earlier filler word",
        },
        "found": {
            "method": "float64 on the saved weights after fold_ln (and "
                      "fold_ln + centering, TransformerLens's default). "
                      "Ranks are 0-based over all tokens, largest first; "
                      "qk ranks: key src in row dst of W_E W_Q W_K^T W_E^T "
                      "(with_bias: (W_E W_Q + b_Q)(W_E W_K + b_K)^T); ov rank: "
                      "out in row src of W_E W_V W_O W_U; one entry per head. "
                      "copying_score: sum(l)/sum(|l|) over the eigenvalues of "
                      "the token OV circuit.",
            "skip_trigrams": trigrams,
            "heads": heads,
            "copying_heads": [
                {"layer": 0, "head": h["head"],
                 "copying_score": h["copying_score"]}
                for h in heads if h["copying_score"] > 0.8],
            "counts_top5_best_head": summary,
        },
    }
    write_json(os.path.join(out_dir, "card.json"), card)
    write_skip_trigram_card(os.path.join(out_dir, "CARD.md"), card, vocab)
    return card


def write_skip_trigram_card(path, card, vocab):
    cfg, tr, fd = card["config"], card["training"], card["found"]
    lines = [
        "# skip-trigram-1l",
        "",
        "A 1-layer, attention-only transformer (%d heads, d_model %d, d_head "
        "%d, n_ctx %d, LayerNorm before attention and before the unembedding, "
        "learned positional embedding, all biases) over a %d-token word "
        "vocabulary (`vocab.txt`, line number = token id, `<bos>` = 0)."
        % (cfg["n_heads"], cfg["d_model"], cfg["d_head"], cfg["n_ctx"],
           len(vocab)),
        "Trained by `tools/train_models.py`; `card.json` holds every number "
        "below in machine-readable form.",
        "",
        "## Data (planted, by construction)",
        "",
        "Each training sequence is `<bos>` then %d words (the model reads "
        "the first %d tokens and predicts each next one) drawn uniformly "
        "from the %d filler words; "
        "each filler position, with probability 0.3, instead "
        "repeats an earlier filler word of the same sequence (copying). Into "
        "it go one or two skip-trigrams `A … B C` (B 2 to 9 positions after "
        "A, C right after B), chosen uniformly from the 16 below, and in half "
        "of the trigrams with room for it a decoy source verb (one not paired "
        "with B) between A and B. Every verb has two particles and every "
        "particle two verbs, so neither A nor B alone predicts C."
        % (cfg["n_ctx"], cfg["n_ctx"],
           len(vocab) - 1 - len(SOURCES) - len(PARTICLES) - len(OUTPUTS)),
        "",
        "| src A | dst B | out C |",
        "|---|---|---|",
    ]
    lines += ["| %s | %s | %s |" % (t["src"], t["dst"], t["out"])
              for t in card["planted"]["skip_trigrams"]]
    lines += [
        "",
        "## Training",
        "",
        "Seed %d; %d steps of AdamW, batch %d sequences, peak lr %g, weight "
        "decay %g, %s; next-token cross-entropy on every position; one CPU "
        "thread." % (tr["seed"], tr["steps"], tr["batch_size"], tr["lr"],
                     tr["weight_decay"], tr["schedule"]),
        "Final training loss (mean of the last 100 steps) %.4f; on %d fresh "
        "sequences: loss %.4f overall, %.4f on the planted output tokens, "
        "accuracy %.4f on them (the filler positions are mostly random, so "
        "the overall loss stays high by design)."
        % (tr["final_train_loss_mean_last_100"], tr["eval_sequences"],
           tr["eval_loss"], tr["eval_loss_on_planted_outputs"],
           tr["eval_accuracy_on_planted_outputs"]),
        "",
        "## What it contains (found, measured on the saved weights)",
        "",
        "Measured in float64 after folding LayerNorm into the weights (as "
        "TransformerLens's `fold_ln`), and again with TransformerLens's "
        "centering on top. Ranks are 0-based over all %d tokens, largest "
        "first, shown per head (head 0, 1, 2, 3): QK = rank of key A in row "
        "B of the token QK circuit `W_E W_Q W_Kᵀ W_Eᵀ` without and with the "
        "query/key biases; OV = rank of C in row A of `W_E W_V W_O W_U`."
        % len(vocab),
        "",
        "| A … B → C | QK no bias | QK with bias | OV |",
        "|---|---|---|---|",
    ]
    for t in fd["skip_trigrams"]:
        d = t["fold_ln"]
        lines.append("| %s … %s → %s | %s | %s | %s |" % (
            t["src"], t["dst"], t["out"], d["qk_rank_no_bias"],
            d["qk_rank_with_bias"], d["ov_rank"]))
    s = fd["counts_top5_best_head"]
    lines += [
        "",
        "Trigrams whose A is in the top 5 keys of B in some head (fold_ln): "
        "%d/16 without biases, %d/16 with; whose C is in the top 5 outputs "
        "of A in some head: %d/16. With centering: %d, %d, %d. In one and "
        "the same head (QK with bias and OV both top 5): %d/16 (fold_ln), "
        "%d/16 (centered)."
        % (s["fold_ln"]["qk_rank_no_bias"], s["fold_ln"]["qk_rank_with_bias"],
           s["fold_ln"]["ov_rank"], s["fold_ln_center"]["qk_rank_no_bias"],
           s["fold_ln_center"]["qk_rank_with_bias"],
           s["fold_ln_center"]["ov_rank"],
           s["same_head_top5_with_bias"]["fold_ln"],
           s["same_head_top5_with_bias"]["fold_ln_center"]),
        "",
        "OV copying scores `Σλ/Σ|λ|` (fold_ln; centered): " + ", ".join(
            "head %d: %.3f; %.3f" % (h["head"], h["copying_score"],
                                     h["copying_score_centered"])
            for h in fd["heads"]) + ". Copying heads (score > 0.8): " +
        ", ".join("0.%d" % h["head"] for h in fd["copying_heads"]) + ".",
    ]
    write_card(path, lines)


# ---------------------------------------------------------------------------
# Model 2: induction heads.

def induction_vocab():
    consonants, vowels = "bdfghjklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    syllables += [v + c for v in vowels for c in "klmnst"]
    return ["<bos>"] + syllables[:100]


SPAN_MIN, SPAN_MAX = 4, 12


def induction_sequence(rng, n_vocab, length):
    """`length` tokens: <bos>, then uniform random tokens in which a random
    span (SPAN_MIN to SPAN_MAX tokens) is repeated later on, once or
    twice (the second may overwrite part of the first)."""
    seq = [0] + [int(x) for x in rng.integers(1, n_vocab, size=length - 1)]
    for _ in range(1 + int(rng.random() < 0.5)):
        n = int(rng.integers(SPAN_MIN, SPAN_MAX + 1))
        src = int(rng.integers(1, length - 2 * n + 1))
        dst = int(rng.integers(src + n, length - n + 1))
        seq[dst:dst + n] = seq[src:src + n]
    return seq


INDUCTION_CFG = {"d_model": 64, "n_heads": 4, "d_head": 16, "n_layers": 2,
                 "n_ctx": 32}
INDUCTION_HP = {"seed": 4321, "steps": 3000, "batch_size": 64, "lr": 3e-3,
                "weight_decay": 0.05, "pos_init_std": 1.0,
                "optimizer": "AdamW (betas 0.9, 0.999)",
                "schedule": "linear warm-up over 5% of steps, then cosine "
                            "to 0"}


def train_induction(out_dir, log):
    vocab = induction_vocab()
    V = len(vocab)
    cfg = dict(d_vocab=V, **INDUCTION_CFG)
    hp = dict(INDUCTION_HP)
    seed = hp["seed"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    p = init_params(cfg, gen, hp["pos_init_std"])
    rng = np.random.default_rng(seed)

    def batches(step):
        return torch.tensor([induction_sequence(rng, V, cfg["n_ctx"] + 1)
                             for _ in range(hp["batch_size"])])

    log("induction-2l: vocab %d, %s" % (V, cfg))
    history = train(p, cfg, batches, hp["steps"], hp["lr"],
                    hp["weight_decay"], log)

    # Evaluation on <bos> + X + X, X uniform random of length R.
    R, N = (cfg["n_ctx"] - 1) // 2, 256
    eval_rng = np.random.default_rng(seed + 1)
    x = eval_rng.integers(1, V, size=(N, R))
    tokens = torch.tensor(np.concatenate(
        [np.zeros((N, 1), dtype=np.int64), x, x], axis=1))
    logits, patterns = forward(p, cfg, tokens, return_patterns=True)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    # nll[:, t] is the loss of predicting token t+1. First copy: tokens
    # 2..R (token 1 is the first); second copy: tokens R+2..2R (token R+1
    # starts the repeat and is unpredictable).
    loss_first = nll[:, 1:R].mean().item()
    loss_repeat = nll[:, R + 1:2 * R].mean().item()

    # Previous-token share of the layer-0 heads, on the same sequences,
    # query positions 1..end.
    T = tokens.shape[1]
    q = torch.arange(1, T)
    prev = [patterns[0][:, h, q, q - 1].mean().item()
            for h in range(cfg["n_heads"])]
    # Induction score of layer-1 heads: from query position t in the second
    # copy (t = R+1..2R) to t - R + 1, the token after t's first occurrence.
    qi = torch.arange(R + 1, 2 * R + 1)
    induction = [patterns[1][:, h, qi, qi - R + 1].mean().item()
                 for h in range(cfg["n_heads"])]

    f = fold_ln(p, cfg)

    def w_qk(l, h):
        return head(f, l, h, "W_Q") @ head(f, l, h, "W_K").T

    def w_ov(l, h):
        return head(f, l, h, "W_V") @ head(f, l, h, "W_O")

    def comp(a, b):
        return (torch.linalg.norm(a @ b) /
                (torch.linalg.norm(a) * torch.linalg.norm(b))).item()

    H = cfg["n_heads"]
    k_comp = [[comp(w_ov(0, h1), w_qk(1, h2).T) for h2 in range(H)]
              for h1 in range(H)]
    q_comp = [[comp(w_ov(0, h1), w_qk(1, h2)) for h2 in range(H)]
              for h1 in range(H)]
    v_comp = [[comp(w_ov(0, h1), w_ov(1, h2)) for h2 in range(H)]
              for h1 in range(H)]
    # What composition scores of random matrices of these shapes give, for
    # scale: the same score with W_QK's rows permuted at random.
    perm_rng = np.random.default_rng(seed + 3)
    base = []
    for _ in range(20):
        perm = torch.from_numpy(perm_rng.permutation(cfg["d_model"]))
        base.append(np.mean([comp(w_ov(0, a), w_qk(1, b).T[perm])
                             for a in range(H) for b in range(H)]))
    # The same read from the weights alone: each layer-0 head's positional
    # QK circuit (W_pos W_Q + b_Q)(W_pos W_K)^T / sqrt(d_head), softmaxed
    # over the causal keys, and its mean mass on key t-1 for queries t >= 1
    # (tokens and LayerNorm's scale left out).
    pos_prev = []
    t = torch.arange(1, cfg["n_ctx"])
    for h in range(H):
        P = f["pos_embed.W_pos"]
        s = (P @ head(f, 0, h, "W_Q") + head(f, 0, h, "b_Q")) \
            @ (P @ head(f, 0, h, "W_K")).T / math.sqrt(cfg["d_head"])
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1),
                          float("-inf"))
        pos_prev.append(torch.softmax(s, -1)[t, t - 1].mean().item())
    copy = [[rounded(copying_score(f, l, h)) for h in range(H)]
            for l in range(2)]

    prev_heads = [h for h in range(H) if prev[h] > 0.5]
    ind_heads = [h for h in range(H) if induction[h] > 0.3]
    prev_head = max(range(H), key=lambda h: prev[h])
    ind_head = max(range(H), key=lambda h: induction[h])

    results = {
        "final_train_loss_mean_last_100": rounded(float(np.mean(history[-100:]))),
        "eval_loss_first_copy": rounded(loss_first),
        "eval_loss_repeat": rounded(loss_repeat),
        "eval_loss_uniform_baseline": rounded(math.log(V - 1)),
        "eval_sequences": "%d x <bos> + X + X, X uniform random of length %d"
                          % (N, R),
    }
    save_model(out_dir, "induction-2l", p, cfg, seed, vocab)

    test_rng = np.random.default_rng(seed + 2)
    span = [int(t) for t in test_rng.integers(1, V, size=R)]
    sequences = [[0] + span + span,
                 induction_sequence(test_rng, V, cfg["n_ctx"]),
                 [0] + [int(t) for t in test_rng.integers(1, V, size=9)]]
    write_reference_logits(
        os.path.join(out_dir, "reference_logits.json"), p, cfg, sequences,
        "logits[pos][token] of model.safetensors (float32 weights) computed "
        "in float64 by tools/train_models.py's forward pass; LN eps 1e-5")

    card = {
        "model": "induction-2l",
        "config": cfg,
        "training": dict(hp, **results),
        "planted": {
            "data": "sequences of <bos> and %d uniform random tokens (ids "
                    "1..%d) in which a random span of %d to %d tokens is "
                    "repeated later on (a second span in half of the "
                    "sequences; it may overwrite part of the first)"
                    % (cfg["n_ctx"], V - 1, SPAN_MIN, SPAN_MAX),
        },
        "found": {
            "method": "attention measured on %s; composition scores in "
                      "float64 after fold_ln, row-vector form, W_QK = W_Q "
                      "W_K^T, W_OV = W_V W_O: K = |W_OV1 W_QK2^T|_F / "
                      "(|W_OV1|_F |W_QK2|_F), Q with W_QK2, V with W_OV2; "
                      "indexed [layer-0 head][layer-1 head]. copying_score: "
                      "sum(l)/sum(|l|) over eigenvalues of W_E W_V W_O W_U "
                      "(fold_ln)." % results["eval_sequences"],
            "previous_token_share_layer0": [rounded(v) for v in prev],
            "positional_qk_previous_mass_layer0": [
                rounded(v) for v in pos_prev],
            "induction_score_layer1": [rounded(v) for v in induction],
            "k_composition": [[rounded(v) for v in r] for r in k_comp],
            "q_composition": [[rounded(v) for v in r] for r in q_comp],
            "v_composition": [[rounded(v) for v in r] for r in v_comp],
            "composition_baseline_permuted": rounded(float(np.mean(base))),
            "copying_score": copy,
            "previous_token_heads": [
                {"layer": 0, "head": h, "previous_token_share":
                 rounded(prev[h])} for h in prev_heads],
            "induction_heads": [
                {"layer": 1, "head": h, "induction_score":
                 rounded(induction[h]), "copying_score": copy[1][h],
                 "k_composition_with": [
                     {"layer": 0, "head": h1, "score": rounded(k_comp[h1][h])}
                     for h1 in prev_heads],
                 "strongest_k_composition_layer0_head": max(
                     range(H), key=lambda h1: k_comp[h1][h])}
                for h in ind_heads],
            "strongest": {"previous_token_head": [0, prev_head],
                          "induction_head": [1, ind_head]},
        },
    }
    write_json(os.path.join(out_dir, "card.json"), card)
    write_induction_card(os.path.join(out_dir, "CARD.md"), card, vocab)
    return card


def write_induction_card(path, card, vocab):
    cfg, tr, fd = card["config"], card["training"], card["found"]

    def row(xs):
        return " | ".join("%.3f" % x for x in xs)

    H = cfg["n_heads"]
    lines = [
        "# induction-2l",
        "",
        "A 2-layer, attention-only transformer (%d heads a layer, d_model "
        "%d, d_head %d, n_ctx %d, LayerNorm before each attention layer and "
        "before the unembedding, learned positional embedding, all biases) "
        "over %d tokens (`vocab.txt`: `<bos>` = 0, then 100 syllables)."
        % (H, cfg["d_model"], cfg["d_head"], cfg["n_ctx"], len(vocab)),
        "Trained by `tools/train_models.py`; `card.json` holds every number "
        "below in machine-readable form.",
        "",
        "## Data (planted, by construction)",
        "",
        card["planted"]["data"].capitalize().replace("<bos>", "`<bos>`") +
        ". Only the repeats are predictable, and "
        "only from context: that is what an induction head does.",
        "",
        "## Training",
        "",
        "Seed %d; %d steps of AdamW, batch %d sequences, peak lr %g, weight "
        "decay %g, %s; next-token cross-entropy on every position; one CPU "
        "thread. Final training loss (mean of the last 100 steps) %.4f."
        % (tr["seed"], tr["steps"], tr["batch_size"], tr["lr"],
           tr["weight_decay"], tr["schedule"],
           tr["final_train_loss_mean_last_100"]),
        "On %s: loss %.3f on the first copy (uniform guess: %.3f), %.3f on "
        "the repeat (its first token excluded): the in-context loss drop."
        % (tr["eval_sequences"].replace("<bos>", "`<bos>`"),
           tr["eval_loss_first_copy"], tr["eval_loss_uniform_baseline"],
           tr["eval_loss_repeat"]),
        "",
        "## What it contains (found, measured on the saved weights)",
        "",
        "Attention measured on the evaluation sequences; composition and "
        "copying scores in float64 after folding LayerNorm (row-vector form, "
        "`W_QK = W_Q W_Kᵀ`, `W_OV = W_V W_O`).",
        "",
        "| head |" + "".join(" %d |" % h for h in range(H)),
        "|---|" + "---|" * H,
        "| layer 0: share of attention on position t−1 | %s |"
        % row(fd["previous_token_share_layer0"]),
        "| layer 0: the same from the weights alone: mass on t−1 of the "
        "softmaxed positional QK circuit `(W_pos W_Q + b_Q)(W_pos W_K)ᵀ/"
        "√d_head` | %s |" % row(fd["positional_qk_previous_mass_layer0"]),
        "| layer 1: induction score (attention to the token after the "
        "previous occurrence) | %s |" % row(fd["induction_score_layer1"]),
        "| layer 0: OV copying score | %s |" % row(fd["copying_score"][0]),
        "| layer 1: OV copying score | %s |" % row(fd["copying_score"][1]),
        "",
        "K-composition `‖W_OV¹ W_QK²ᵀ‖_F / (‖W_OV¹‖_F ‖W_QK²‖_F)`, rows = "
        "layer-0 head, columns = layer-1 head (the same score with W_QK²'s "
        "rows permuted at random averages %.3f):"
        % fd["composition_baseline_permuted"],
        "",
        "| L0 \\ L1 |" + "".join(" %d |" % h for h in range(H)),
        "|---|" + "---|" * H,
    ]
    lines += ["| %d | %s |" % (h, row(r))
              for h, r in enumerate(fd["k_composition"])]
    lines += [""]
    lines += ["Previous-token heads (share > 0.5): " + (", ".join(
        "0.%d (%.3f)" % (d["head"], d["previous_token_share"])
        for d in fd["previous_token_heads"]) or "none") + "."]
    lines += ["Induction heads (induction score > 0.3): " + (", ".join(
        "1.%d (induction %.3f, copying %.3f, K-composition %s; strongest "
        "K-composition with 0.%d)" % (
            d["head"], d["induction_score"], d["copying_score"], ", ".join(
                "with 0.%d %.3f" % (k["head"], k["score"])
                for k in d["k_composition_with"]),
            d["strongest_k_composition_layer0_head"])
        for d in fd["induction_heads"]) or "none") + "."]
    write_card(path, lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("skip-trigram-1l", "induction-2l"))
    ap.add_argument("--out", default=os.path.join(REPO, "examples", "models"),
                    help="directory that receives one folder per model")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.only in (None, "skip-trigram-1l"):
        card = train_skip_trigram(os.path.join(args.out, "skip-trigram-1l"),
                                  log)
        log(json.dumps(card["training"]))
        log(json.dumps(card["found"]["counts_top5_best_head"]))
        log(json.dumps(card["found"]["heads"]))
    if args.only in (None, "induction-2l"):
        card = train_induction(os.path.join(args.out, "induction-2l"), log)
        log(json.dumps(card["training"]))
        fd = dict(card["found"])
        fd.pop("method")
        log(json.dumps(fd))


if __name__ == "__main__":
    main()
