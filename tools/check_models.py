#!/usr/bin/python3
"""Check the shipped example models independently of train_models.py.

For each folder in examples/models/: parse model.safetensors from its bytes
(layout, dtypes, offsets, no holes), check the shapes against the metadata
and vocab.txt, run a float64 numpy forward pass written from the formula in
docs/models.md and compare it with reference_logits.json. Needs only numpy
(Debian: python3-numpy). Exit status 0 when every check passes.

    /usr/bin/python3 tools/check_models.py [MODELS_DIR | MODEL_DIR]
"""

import json
import os
import struct
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__")
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    end = 0
    for b, e in spans:
        assert b == end, "hole or overlap at byte %d" % b
        end = e
    assert 8 + n + end == len(raw), "data does not end at the file's end"
    tensors = {}
    for name, v in header.items():
        assert v["dtype"] == "F32", name
        b, e = v["data_offsets"]
        a = np.frombuffer(raw, dtype="<f4", count=(e - b) // 4,
                          offset=8 + n + b)
        tensors[name] = a.reshape(v["shape"]).astype(np.float64)
    return tensors, meta


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def forward(t, meta, tokens):
    L, H, dh = (int(meta[k]) for k in ("n_layers", "n_heads", "d_head"))
    eps = float(meta["eps"])
    T = len(tokens)
    resid = t["embed.W_E"][tokens] + t["pos_embed.W_pos"][:T]
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    for l in range(L):
        p = "blocks.%d." % l
        x = layer_norm(resid, t[p + "ln1.w"], t[p + "ln1.b"], eps)
        out = np.zeros_like(resid)
        for h in range(H):
            q = x @ t[p + "attn.W_Q"][h] + t[p + "attn.b_Q"][h]
            k = x @ t[p + "attn.W_K"][h] + t[p + "attn.b_K"][h]
            v = x @ t[p + "attn.W_V"][h] + t[p + "attn.b_V"][h]
            s = q @ k.T / np.sqrt(dh)
            s[mask] = -np.inf
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            out += s @ v @ t[p + "attn.W_O"][h]
        resid = resid + out + t[p + "attn.b_O"]
    x = layer_norm(resid, t["ln_final.w"], t["ln_final.b"], eps)
    return x @ t["unembed.W_U"] + t["unembed.b_U"]


def check(folder):
    t, meta = load(os.path.join(folder, "model.safetensors"))
    V, D, H, dh, L, T = (int(meta[k]) for k in ("d_vocab", "d_model",
                                                 "n_heads", "d_head",
                                                 "n_layers", "n_ctx"))
    shapes = {"embed.W_E": (V, D), "pos_embed.W_pos": (T, D),
              "ln_final.w": (D,), "ln_final.b": (D,),
              "unembed.W_U": (D, V), "unembed.b_U": (V,)}
    for l in range(L):
        p = "blocks.%d." % l
        shapes.update({p + "ln1.w": (D,), p + "ln1.b": (D,),
                       p + "attn.W_O": (H, dh, D), p + "attn.b_O": (D,)})
        for n in "QKV":
            shapes[p + "attn.W_" + n] = (H, D, dh)
            shapes[p + "attn.b_" + n] = (H, dh)
    assert set(shapes) == set(t), set(shapes) ^ set(t)
    for name, shape in shapes.items():
        assert t[name].shape == shape, (name, t[name].shape, shape)
    with open(os.path.join(folder, "vocab.txt")) as f:
        assert len(f.read().splitlines()) == V, "vocab.txt length"
    size = os.path.getsize(os.path.join(folder, "model.safetensors"))
    assert size < 4 << 20, "model over 4 MB"
    ref = json.load(open(os.path.join(folder, "reference_logits.json")))
    worst = 0.0
    for s in ref["sequences"]:
        got = forward(t, meta, np.array(s["tokens"]))
        want = np.array(s["logits"])
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    # The reference is float64 rounded to 9 significant digits, logits are
    # O(10): anything above 1e-6 means the two forward passes disagree.
    assert worst < 1e-6, "forward pass differs from reference by %g" % worst
    print("%s: ok (%d bytes, %d tensors, %d reference sequences, max "
          "|logit diff| %.2g)" % (os.path.basename(folder), size, len(t),
                                  len(ref["sequences"]), worst))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.join(REPO, "examples", "models")
    if os.path.exists(os.path.join(root, "model.safetensors")):
        check(root)
        return
    for name in sorted(os.listdir(root)):
        check(os.path.join(root, name))


if __name__ == "__main__":
    main()
