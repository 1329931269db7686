"""torch.save archives through the bindings: the committed fixtures written by
real torch.save (tests/data/torch) load with one call, like their safetensors
twins, and the positional option reaches the loader."""

import os
import unittest

import mi

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "torch")


def tolist(x):
    return x.tolist() if hasattr(x, "tolist") else x


class TorchTest(unittest.TestCase):
    def test_pth_gives_the_safetensors_logits(self):
        tokens = [0, 5, 3, 17, 5, 3]
        with mi.Model.load(os.path.join(DATA, "tl_standard_f32.pth")) as pth, \
                mi.Model.load(os.path.join(DATA, "tl_standard_f32.safetensors")) as st:
            self.assertEqual(pth.layout, st.layout)
            self.assertEqual(tolist(pth.forward(tokens)), tolist(st.forward(tokens)))

    def test_gpt2_pth_needs_its_heads(self):
        path = os.path.join(DATA, "gpt2_f32.pth")
        with self.assertRaisesRegex(mi.MiError, "n_head"):
            mi.Model.load(path)
        with mi.Model.load(path, n_heads=2) as m:
            self.assertEqual(m.config["n_heads"], 2)

    def test_positional_reaches_the_loader(self):
        path = os.path.join(DATA, "tl_standard_f32.pth")
        with self.assertRaisesRegex(mi.MiError, "positional_embedding_type = none"):
            mi.Model.load(path, positional="none")
        with mi.Model.load(path, positional="standard") as m:
            self.assertEqual(m.config["n_layers"], 2)
        with self.assertRaisesRegex(ValueError, "rotary"):
            mi.Model.load(path, positional="rotary")


if __name__ == "__main__":
    unittest.main()
