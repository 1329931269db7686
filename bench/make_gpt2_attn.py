"""Writes a random attention-only model of GPT-2 small's shapes (d_model 768,
d_head 64, d_vocab 50257, n_ctx 1024; 12 x 12 heads unless LAYERS HEADS are
given), TransformerLens names, float32 safetensors, weights N(0, 0.02²), for
timing `mi report` on a whole GPT-2-sized model:

    /usr/bin/python3 bench/make_gpt2_attn.py FILE [LAYERS HEADS]
"""
import json, struct, sys
import numpy as np

L, H = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) == 4 else (12, 12)
D, DH, V, N = 768, 64, 50257, 1024
rng = np.random.default_rng(12)
t = {"embed.W_E": (V, D), "pos_embed.W_pos": (N, D), "unembed.W_U": (D, V), "unembed.b_U": (V,)}
for l in range(L):
    p = f"blocks.{l}.attn."
    t.update({p + "W_Q": (H, D, DH), p + "W_K": (H, D, DH), p + "W_V": (H, D, DH),
              p + "W_O": (H, DH, D), p + "b_Q": (H, DH), p + "b_K": (H, DH),
              p + "b_V": (H, DH), p + "b_O": (D,)})
header, off = {}, 0
for name, shape in t.items():
    n = int(np.prod(shape)) * 4
    header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
    off += n
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for name, shape in t.items():
        f.write((0.02 * rng.standard_normal(shape, dtype=np.float32)).tobytes())
