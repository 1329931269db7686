"""Loading .safetensors files and vocabularies through the bindings."""

import math
import os
import tempfile
import unittest

import mi
from helpers import write_safetensors


L, H, D, dh, V = 1, 2, 4, 2, 3


def count(*shape):
    """Values k/8 that float32 holds exactly, distinct along each row."""
    return [0.125 * (i % 7) for i in range(math.prod(shape))]


def tl_tensors():
    return {
        "embed.W_E": ([V, D], count(V, D)),
        "blocks.0.attn.W_Q": ([H, D, dh], count(H, D, dh)),
        "blocks.0.attn.W_K": ([H, D, dh], count(H, D, dh)),
        "blocks.0.attn.W_V": ([H, D, dh], count(H, D, dh)),
        "blocks.0.attn.W_O": ([H, dh, D], count(H, dh, D)),
        "unembed.W_U": ([D, V], count(D, V)),
    }


class LoadTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "model.safetensors")
        write_safetensors(self.path, tl_tensors())
        with open(os.path.join(self.dir.name, "vocab.txt"), "w") as f:
            f.write("keep\nin\nmind\n")

    def tearDown(self):
        self.dir.cleanup()

    def test_load_file_with_vocab(self):
        with mi.Model.load(self.path) as m:
            self.assertEqual(m.layout, "transformerlens")
            self.assertEqual((m.config["n_layers"], m.config["n_heads"]), (L, H))
            w = m.weight("W_O", 0, 1)
            row = w[1].tolist() if hasattr(w, "tolist") else w[1]
            start = (1 * dh + 1) * D  # head 1, row 1 of W_O's [H, dh, D]
            self.assertEqual(row, [0.125 * ((start + j) % 7) for j in range(D)])
            self.assertEqual(m.token_str(2), "mind")
            self.assertEqual(m.token_id("in"), 1)
            with self.assertRaises(KeyError):
                m.token_id("bay")

    def test_load_bytes_and_errors(self):
        with open(self.path, "rb") as f:
            data = f.read()
        with mi.Model.load(data, process=None) as m:
            self.assertEqual(m.processing, set())
        with self.assertRaises(mi.MiError) as caught:
            mi.Model.load(data[:-5])
        self.assertEqual(caught.exception.name, "truncated file")
        with self.assertRaises(mi.MiError) as caught:
            mi.Model.load(os.path.join(self.dir.name, "absent.safetensors"))
        self.assertEqual(caught.exception.name, "I/O error")
        self.assertIn("absent.safetensors", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
