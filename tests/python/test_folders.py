"""Model folders and config.json through the bindings: one call loads a
TransformerLens folder and a GPT-2 folder with their vocabularies, and the
options are checked against the config."""

import json
import os
import tempfile
import unittest

import mi
from helpers import write_safetensors
from test_load import D, H, L, V, count, dh, tl_tensors


def gpt2_tensors(n_ctx=5):
    """GPT-2 names, packed heads: c_attn column j of the Q|K|V thirds is j/8 + 3·third."""
    attn = [0.125 * (j % (3 * D)) for i in range(D) for j in range(3 * D)]
    return {
        "wte.weight": ([V, D], count(V, D)),
        "wpe.weight": ([n_ctx, D], count(n_ctx, D)),
        "h.0.attn.c_attn.weight": ([D, 3 * D], attn),
        "h.0.attn.c_proj.weight": ([D, D], count(D, D)),
    }


class FolderTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.folder = self.dir.name

    def tearDown(self):
        self.dir.cleanup()

    def write(self, name, text):
        with open(os.path.join(self.folder, name), "w", encoding="utf-8") as f:
            f.write(text if isinstance(text, str) else json.dumps(text))

    def test_transformerlens_folder(self):
        write_safetensors(os.path.join(self.folder, "model.safetensors"), tl_tensors())
        self.write("config.json", {"n_layers": L, "n_heads": H, "d_model": D, "d_head": dh,
                                   "d_vocab": V, "n_ctx": 8, "eps": 0.25, "attn_only": True,
                                   "normalization_type": None, "act_fn": None})
        self.write("vocab.txt", "keep\nin\nmind\n")
        with mi.Model.load(self.folder) as m:
            self.assertEqual(m.layout, "transformerlens")
            self.assertEqual(m.config["ln_eps"], 0.25)
            self.assertEqual(m.token_str(2), "mind")
        with mi.Model.load(self.folder, vocab=False) as m:
            with self.assertRaises(mi.MiError):
                m.token_str(2)
        # The options are one more source: a disagreement names both.
        with self.assertRaises(mi.MiError) as caught:
            mi.Model.load(self.folder, n_heads=1)
        self.assertIn("config.json says n_heads = 2, but mi_load_options says 1",
                      str(caught.exception))
        with self.assertRaises(mi.MiError) as caught:
            mi.Model.load(self.folder, positional="standard")
        self.assertIn("no positional embedding", str(caught.exception))
        with self.assertRaises(ValueError):
            mi.Model.load(self.folder, positional="rotary")

    def test_gpt2_folder(self):
        write_safetensors(os.path.join(self.folder, "model.safetensors"), gpt2_tensors())
        self.write("config.json", {"model_type": "gpt2", "n_head": H, "n_layer": L,
                                   "n_embd": D, "n_positions": 5, "vocab_size": V,
                                   "layer_norm_epsilon": 1e-5, "attn_only": True})
        self.write("vocab.json", {"a": 0, "\u0120b": 1, "\u010a": 2})
        with mi.Model.load(self.folder, process=None) as m:
            self.assertEqual(m.layout, "gpt2")
            self.assertEqual((m.config["n_heads"], m.config["d_head"]), (H, dh))
            self.assertEqual(m.token_str(1), " b")
            self.assertEqual(m.token_str(2), "\n")
            # Head 1's W_K: columns D + dh.. of c_attn, the packing by definition.
            w = m.weight("W_K", 0, 1)
            rows = w.tolist() if hasattr(w, "tolist") else w
            want = [[0.125 * ((D + dh + j) % (3 * D)) for j in range(dh)] for _ in range(D)]
            self.assertEqual(rows, want)
        # Without the config nothing says the head count.
        with self.assertRaises(mi.MiError) as caught:
            mi.Model.load(self.folder, config=False)
        self.assertIn("number of heads must be given", str(caught.exception))
        # A config beside a named file is read too; a wrong one is named.
        self.write("config.json", {"model_type": "gpt2", "n_head": 3, "attn_only": True})
        with self.assertRaises(mi.MiError) as caught:
            mi.Model.load(os.path.join(self.folder, "model.safetensors"))
        self.assertIn("config.json: n_heads 3 does not divide d_model 4", str(caught.exception))

    def test_gpt2_folder_brings_its_tokenizer(self):
        """vocab.json + merges.txt, as a Hugging Face GPT-2 folder has them:
        text in gives GPT-2's ids (" world" is 995, not "world" 6894)."""
        gpt2 = os.path.join(os.path.dirname(__file__), "..", "data", "gpt2")
        for source, name in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            with open(os.path.join(gpt2, source), "rb") as f, \
                    open(os.path.join(self.folder, name), "wb") as g:
                g.write(f.read())
        vocab = 50257
        write_safetensors(os.path.join(self.folder, "model.safetensors"),
                          {**gpt2_tensors(), "wte.weight": ([vocab, D], [0.0] * (vocab * D))})
        self.write("config.json", {"model_type": "gpt2", "n_head": H, "n_layer": L,
                                   "n_embd": D, "n_positions": 5, "vocab_size": vocab,
                                   "attn_only": True})
        with mi.Model.load(self.folder) as m:
            self.assertEqual(list(m.tokenize("Hello world")), [15496, 995])
        # A merges.txt the vocabulary cannot carry fails the load, naming both files.
        self.write("merges.txt", "#version: 0.2\nzq\u0120 xy\n")
        with self.assertRaises(mi.MiError) as caught:
            mi.Model.load(self.folder)
        self.assertIn("merges.txt", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
