#!/usr/bin/python3
"""Write the small torch.save fixtures in tests/data/torch/.

Each fixture is a state dict written by real torch.save, the same weights
as a .safetensors file (written here by hand, tensors made contiguous), and
a .json with what an independent float64 implementation of the architecture
(below, plain torch, nothing shared with libmi) computes from those weights:
logits and attention patterns for a few token sequences, and per head the
Frobenius norms of the raw token QK and OV circuits and the OV circuit's
copying score (sum of eigenvalues over sum of their moduli).

    tl_standard_f32     TransformerLens names, LayerNorm, every bias, W_pos
                        added to the residual stream; W_U a transposed view,
                        blocks.1.attn.W_V a view at an offset into a larger
                        storage; TL's mask (bool) and IGNORE (0-d) buffers.
    tl_shortformer_*    TL names, positional_embedding_type "shortformer":
                        W_pos added to the query and key inputs after ln1,
                        not to the residual stream or the values. With and
                        without LayerNorm (normalization "LN" / None), in
                        float16 and float32; tensors saved as nn.Parameters
                        for the F16 ones (torch._utils._rebuild_parameter).
    gpt2_f32            Hugging Face GPT-2 names (transformer. prefix),
                        Conv1D-packed c_attn, the attn.bias (bool) and
                        attn.masked_bias (0-d) buffers, and lm_head.weight
                        the very tensor wte.weight is (one shared storage).

Run by hand with Debian's interpreter and torch (apt-get install
python3-torch); CI does not run it and has no torch:

    /usr/bin/python3 tools/make_torch_fixtures.py [--out tests/data/torch]

Fixed seeds and one thread: a rerun on the same torch build writes
byte-identical files (checked with torch 1.13). The files are a few KB each.
"""

import argparse
import collections
import json
import math
import os
import struct

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LN_EPS = 1e-5
SEQUENCES = [[0, 5, 3, 17, 5, 3, 9, 1, 5, 3], [19, 2, 2, 2, 11, 8, 0, 13], [7]]

# ---------------------------------------------------------------------------
# The reference: float64, from the weights as saved.


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + LN_EPS)
    return y * w + b if w is not None else y


def attend(q, k, v):
    """q, k, v: [heads, n, d_head] -> patterns [heads, n, n], z [heads, n, d_head]."""
    n, dh = q.shape[1], q.shape[2]
    scores = q @ k.transpose(1, 2) / math.sqrt(dh)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    scores = scores.masked_fill(~causal, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    return pattern, pattern @ v


def tl_forward(p, cfg, tokens):
    """TransformerLens's attention-only forward pass, standard or shortformer."""
    n = len(tokens)
    pos = p["pos_embed.W_pos"][:n]
    resid = p["embed.W_E"][tokens]
    if cfg["positional"] == "standard":
        resid = resid + pos
    patterns = []
    for l in range(cfg["n_layers"]):
        a = f"blocks.{l}.attn."
        x = resid
        if cfg["ln"]:
            x = layer_norm(resid, p[f"blocks.{l}.ln1.w"], p[f"blocks.{l}.ln1.b"])
        qk_in = x + pos if cfg["positional"] == "shortformer" else x
        bias = lambda name: p.get(a + name, torch.zeros(1, 1, dtype=torch.float64))
        q = torch.einsum("nd,hde->hne", qk_in, p[a + "W_Q"]) + bias("b_Q")[:, None, :]
        k = torch.einsum("nd,hde->hne", qk_in, p[a + "W_K"]) + bias("b_K")[:, None, :]
        v = torch.einsum("nd,hde->hne", x, p[a + "W_V"]) + bias("b_V")[:, None, :]
        pattern, z = attend(q, k, v)
        patterns.append(pattern)
        resid = resid + torch.einsum("hne,hed->nd", z, p[a + "W_O"])
        if a + "b_O" in p:
            resid = resid + p[a + "b_O"]
    if cfg["ln"]:
        resid = layer_norm(resid, p["ln_final.w"], p["ln_final.b"])
    logits = resid @ p["unembed.W_U"]
    if "unembed.b_U" in p:
        logits = logits + p["unembed.b_U"]
    return logits, torch.stack(patterns)


def gpt2_forward(p, cfg, tokens):
    """GPT-2's attention-only forward pass from its own packed weights."""
    n, H, D = len(tokens), cfg["n_heads"], cfg["d_model"]
    t = "transformer."
    resid = p[t + "wte.weight"][tokens] + p[t + "wpe.weight"][:n]
    patterns = []
    for l in range(cfg["n_layers"]):
        h = f"{t}h.{l}."
        x = layer_norm(resid, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
        qkv = x @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
        q, k, v = (m.reshape(n, H, D // H).transpose(0, 1) for m in qkv.split(D, dim=1))
        pattern, z = attend(q, k, v)
        patterns.append(pattern)
        merged = z.transpose(0, 1).reshape(n, D)
        resid = resid + merged @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
    resid = layer_norm(resid, p[t + "ln_f.weight"], p[t + "ln_f.bias"])
    return resid @ p["lm_head.weight"].T, torch.stack(patterns)


def head_weights(p, cfg, l, h):
    """(W_E, W_Q, W_K, W_V, W_O, W_U) of head (l, h), float64, unprocessed."""
    if cfg["layout"] == "gpt2":
        t, D, dh = "transformer.", cfg["d_model"], cfg["d_head"]
        c = p[f"{t}h.{l}.attn.c_attn.weight"]
        cols = slice(h * dh, (h + 1) * dh)
        WQ, WK, WV = (c[:, part * D:(part + 1) * D][:, cols] for part in range(3))
        WO = p[f"{t}h.{l}.attn.c_proj.weight"][cols, :]
        return p[t + "wte.weight"], WQ, WK, WV, WO, p["lm_head.weight"].T
    a = f"blocks.{l}.attn."
    return (p["embed.W_E"], p[a + "W_Q"][h], p[a + "W_K"][h], p[a + "W_V"][h], p[a + "W_O"][h],
            p["unembed.W_U"])


def circuits(p, cfg):
    heads = []
    for l in range(cfg["n_layers"]):
        for h in range(cfg["n_heads"]):
            WE, WQ, WK, WV, WO, WU = head_weights(p, cfg, l, h)
            qk = WE @ WQ @ WK.T @ WE.T
            ov = WE @ WV @ WO @ WU
            lam = torch.linalg.eigvals(ov)
            keep = lam.abs() > 1e-6 * lam.abs().max()
            score = (lam[keep].sum().real / lam[keep].abs().sum()).item()
            heads.append({"layer": l, "head": h,
                          "qk_frobenius": torch.linalg.norm(qk).item(),
                          "ov_frobenius": torch.linalg.norm(ov).item(),
                          "ov_copying_score": score})
    return heads


# ---------------------------------------------------------------------------
# The state dicts.


def tl_state_dict(cfg, gen, dtype, views, as_parameters):
    V, D, H, dh, L, T = (cfg[k] for k in ("d_vocab", "d_model", "n_heads", "d_head",
                                          "n_layers", "n_ctx"))
    r = lambda *shape, scale=1.0: (torch.randn(*shape, generator=gen) * scale).to(dtype)
    sd = collections.OrderedDict()
    sd["embed.W_E"] = r(V, D)
    sd["pos_embed.W_pos"] = r(T, D, scale=0.5)
    for l in range(L):
        a = f"blocks.{l}."
        if cfg["ln"]:
            sd[a + "ln1.w"] = (1 + r(D, scale=0.2).float()).to(dtype)
            sd[a + "ln1.b"] = r(D, scale=0.2)
        sd[a + "attn.W_Q"] = r(H, D, dh, scale=D ** -0.5)
        sd[a + "attn.W_K"] = r(H, D, dh, scale=D ** -0.5)
        if views and l == 1:
            # A view at an offset into a larger storage, as a slice gives.
            sd[a + "attn.W_V"] = r(H, D + 3, dh, scale=D ** -0.5)[:, 3:, :]
        else:
            sd[a + "attn.W_V"] = r(H, D, dh, scale=D ** -0.5)
        sd[a + "attn.W_O"] = r(H, dh, D, scale=dh ** -0.5)
        if cfg["biases"]:
            for b in ("b_Q", "b_K", "b_V"):
                sd[a + "attn." + b] = r(H, dh, scale=0.1)
            sd[a + "attn.b_O"] = r(D, scale=0.1)
        # TransformerLens's buffers, which libmi must skip.
        sd[a + "attn.mask"] = torch.tril(torch.ones(T, T, dtype=torch.bool))
        sd[a + "attn.IGNORE"] = torch.tensor(-1e5)
    if cfg["ln"]:
        sd["ln_final.w"] = (1 + r(D, scale=0.2).float()).to(dtype)
        sd["ln_final.b"] = r(D, scale=0.2)
    if views:
        sd["unembed.W_U"] = r(V, D, scale=D ** -0.5).t()  # a transposed view
    else:
        sd["unembed.W_U"] = r(D, V, scale=D ** -0.5)
    if cfg["biases"]:
        sd["unembed.b_U"] = r(V, scale=0.1)
    if as_parameters:
        for k in sd:
            if sd[k].is_floating_point() and sd[k].dim() > 0:
                sd[k] = torch.nn.Parameter(sd[k], requires_grad=False)
    return sd


def gpt2_state_dict(cfg, gen):
    V, D, L, T = cfg["d_vocab"], cfg["d_model"], cfg["n_layers"], cfg["n_ctx"]
    r = lambda *shape, scale=1.0: torch.randn(*shape, generator=gen) * scale
    t = "transformer."
    sd = collections.OrderedDict()
    sd[t + "wte.weight"] = r(V, D)
    sd[t + "wpe.weight"] = r(T, D, scale=0.5)
    for l in range(L):
        h = f"{t}h.{l}."
        sd[h + "ln_1.weight"] = 1 + r(D, scale=0.2)
        sd[h + "ln_1.bias"] = r(D, scale=0.2)
        sd[h + "attn.bias"] = torch.tril(torch.ones(T, T, dtype=torch.bool)).view(1, 1, T, T)
        sd[h + "attn.masked_bias"] = torch.tensor(-1e4)
        sd[h + "attn.c_attn.weight"] = r(D, 3 * D, scale=D ** -0.5)
        sd[h + "attn.c_attn.bias"] = r(3 * D, scale=0.1)
        sd[h + "attn.c_proj.weight"] = r(D, D, scale=D ** -0.5)
        sd[h + "attn.c_proj.bias"] = r(D, scale=0.1)
    sd[t + "ln_f.weight"] = 1 + r(D, scale=0.2)
    sd[t + "ln_f.bias"] = r(D, scale=0.2)
    sd["lm_head.weight"] = sd[t + "wte.weight"]  # tied: one storage
    return sd


# ---------------------------------------------------------------------------
# Files.

ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.float64: "F64", torch.bool: "BOOL"}


def write_safetensors(path, sd):
    header, blobs, offset = {}, [], 0
    for name, t in sd.items():
        t = t.detach().contiguous()
        blob = t.view(torch.uint8).numpy().tobytes() if t.dim() else \
            t.reshape(1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text.encode() + b"".join(blobs))


def reference(sd, cfg):
    p = {k: v.detach().to(torch.float64) for k, v in sd.items() if v.is_floating_point()}
    forward = gpt2_forward if cfg["layout"] == "gpt2" else tl_forward
    seqs = []
    for tokens in SEQUENCES:
        logits, patterns = forward(p, cfg, tokens)
        seqs.append({"tokens": tokens, "logits": logits.tolist(), "patterns": patterns.tolist()})
    return {"config": cfg, "ln_eps": LN_EPS, "sequences": seqs, "heads": circuits(p, cfg)}


def fixture(out, name, sd, cfg):
    torch.save(sd, os.path.join(out, name + ".pth"))
    write_safetensors(os.path.join(out, name + ".safetensors"), sd)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(reference(sd, cfg), f, indent=None, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "torch"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    base = {"n_layers": 2, "n_heads": 2, "d_model": 8, "d_head": 4, "d_vocab": 20, "n_ctx": 12}

    cfg = dict(base, layout="transformerlens", positional="standard", ln=True, biases=True)
    gen = torch.Generator().manual_seed(1)
    fixture(args.out, "tl_standard_f32", tl_state_dict(cfg, gen, torch.float32, True, False),
            cfg)

    for ln in (True, False):
        for dtype, tag in ((torch.float16, "f16"), (torch.float32, "f32")):
            cfg = dict(base, layout="transformerlens", positional="shortformer", ln=ln,
                       biases=ln)
            gen = torch.Generator().manual_seed(2 + ln)
            sd = tl_state_dict(cfg, gen, dtype, False, dtype == torch.float16)
            fixture(args.out, f"tl_shortformer_{'ln' if ln else 'noln'}_{tag}", sd, cfg)

    cfg = dict(base, layout="gpt2", positional="standard", ln=True, biases=True)
    gen = torch.Generator().manual_seed(4)
    fixture(args.out, "gpt2_f32", gpt2_state_dict(cfg, gen), cfg)


if __name__ == "__main__":
    main()
