"""Shortformer models through the bindings: the ``positional`` keyword of
Model.create / from_arrays and Model.load, against reference.run on the raw
weights (W_pos added to queries and keys after ln1, never to the stream).

Tolerance as in test_forward: 1e-4 of the largest logit (1e-4 for patterns);
libmi runs float32 products and agrees to about 1e-5 here, while reading
positions as a standard model does moves logits and patterns by O(0.1)."""

import os
import struct
import tempfile
import unittest

import mi
from reference import forward_weights, random_weights, tolist
from helpers import write_safetensors

TOL = 1e-4
TOKENS = [3, 0, 6, 3, 1, 2]
SHAPE = dict(n_layers=2, n_heads=2, d_model=6, d_head=3, d_vocab=7, n_ctx=6)


def float32(x):
    """x (a nested list) rounded to float32, as a file holds it."""
    if isinstance(x, dict):
        return {k: float32(v) for k, v in x.items()}
    if isinstance(x, list):
        return [float32(v) for v in x]
    return struct.unpack("<f", struct.pack("<f", x))[0]


def flat(x):
    return [v for row in x for v in flat(row)] if isinstance(x, list) else [x]


def shape(x):
    return [len(x)] + shape(x[0]) if isinstance(x, list) else []


def tl_file(path, weights, metadata=None):
    """The weights as a TransformerLens state dict."""
    L = SHAPE["n_layers"]
    tensors = {"embed.W_E": weights["W_E"], "pos_embed.W_pos": weights["W_pos"],
               "unembed.W_U": weights["W_U"], "unembed.b_U": weights["b_U"],
               "ln_final.w": weights["ln_final.w"], "ln_final.b": weights["ln_final.b"]}
    for l in range(L):
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            tensors[f"blocks.{l}.attn.{name}"] = weights[name][l]
        tensors[f"blocks.{l}.ln1.w"] = weights["ln1.w"][l]
        tensors[f"blocks.{l}.ln1.b"] = weights["ln1.b"][l]
    write_safetensors(path, {k: (shape(v), flat(v)) for k, v in tensors.items()}, metadata)


class ShortformerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.weights = float32(random_weights(seed=5, **SHAPE))
        config = dict(SHAPE, n_kv_heads=SHAPE["n_heads"], ln_eps=1e-5)
        cls.want = forward_weights(cls.weights, config, TOKENS, "shortformer")
        cls.standard = forward_weights(cls.weights, config, TOKENS, "standard")
        cls.size = max(abs(x) for row in cls.want[0] for x in row)

    def assertClose(self, got, want, size):
        got, want = flat(tolist(got)), flat(want)
        self.assertEqual(len(got), len(want))
        worst = max(abs(g - w) for g, w in zip(got, want))
        self.assertLessEqual(worst, TOL * size)

    def check(self, model):
        self.assertEqual(model.positional, "shortformer")
        out = model.forward(TOKENS, patterns=True)
        self.assertClose(out.logits, self.want[0], self.size)
        self.assertClose(out.patterns, self.want[1], 1.0)

    def test_reference_tells_the_kinds_apart(self):
        worst = max(abs(a - b) for a, b in zip(flat(self.want[0]), flat(self.standard[0])))
        self.assertGreater(worst, 100 * TOL * self.size)

    def test_from_arrays_raw_and_folded(self):
        for process in (None, "fold_ln"):
            with mi.Model.from_arrays(self.weights, process=process, positional="shortformer",
                                      **SHAPE) as m:
                self.check(m)
        with mi.Model.from_arrays(self.weights, **SHAPE) as m:
            self.assertEqual(m.positional, "standard")
        with self.assertRaises(ValueError):
            mi.Model.create(positional="rotary", **SHAPE)
        with self.assertRaises(mi.MiError):  # shortformer needs W_pos
            mi.Model.create(positional="shortformer", **SHAPE)

    def test_load_option_and_metadata(self):
        with tempfile.TemporaryDirectory() as folder:
            silent, says = os.path.join(folder, "a.safetensors"), os.path.join(folder, "b.safetensors")
            tl_file(silent, self.weights)
            tl_file(says, self.weights, {"positional_embedding_type": "shortformer"})
            with mi.Model.load(silent) as m:
                self.assertEqual(m.positional, "standard")
                self.assertClose(m.forward(TOKENS), self.standard[0], self.size)
            with mi.Model.load(silent, positional="shortformer") as m:
                self.check(m)
            with mi.Model.load(says) as m:
                self.check(m)
            with self.assertRaises(mi.MiError) as caught:
                mi.Model.load(says, positional="standard")
            self.assertIn("shortformer", str(caught.exception))
            self.assertIn("standard", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
