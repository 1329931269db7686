"""torch tensors in and out. These run only where torch is installed
(Debian's python3-torch: /usr/bin/python3 here); CI has no torch and skips
them, and there the rest of the suite covers the same paths with numpy and
without it. Also checked everywhere: importing and using mi never imports
torch unless the caller asks for torch output."""

import os
import subprocess
import sys
import time
import unittest

import mi
from mi.arrays import numpy

try:
    import torch
except ImportError:  # only where torch is absent
    torch = None

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "torch")
TOKENS = [0, 5, 3, 17, 5, 3, 9, 1]


class NoTorchTest(unittest.TestCase):
    def test_mi_never_imports_torch_by_itself(self):
        code = ("import sys, mi\n"
                "m = mi.Model.create(n_layers=1, n_heads=1, d_model=4, d_head=2, d_vocab=5)\n"
                "m.set_weight('W_E', [[1.0] * 4] * 5)\n"
                "m.forward([1, 2]); m.loss([1, 2]); m.W_Q\n"
                "print('torch' in sys.modules)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=os.environ)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "False")


@unittest.skipIf(torch is None, "torch is not installed (CI: python3-torch is not installed)")
class TorchTest(unittest.TestCase):
    def test_state_dict_of_tensors_gives_the_files_logits(self):
        sd = torch.load(os.path.join(DATA, "tl_standard_f32.pth"))
        self.assertEqual(sd["blocks.0.attn.b_O"].dim(), 1)  # 1-D biases, bool masks...
        self.assertEqual(sd["blocks.0.attn.mask"].dtype, torch.bool)
        cfg = dict(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=20, n_ctx=12,
                   dtype=torch.float32, device="cpu")
        with mi.Model.from_state_dict(sd, cfg) as m, \
                mi.Model.load(os.path.join(DATA, "tl_standard_f32.safetensors")) as f:
            want = f.forward(TOKENS)
            got = m.forward(torch.tensor(TOKENS))
            self.assertTrue(numpy.array_equal(got, want) if numpy is not None else got == want)
            # A batch of 8 prompts as one tensor.
            batch = torch.tensor([TOKENS] * 8)
            self.assertEqual(tuple(numpy.shape(m.forward(batch))), (8, 8, 20))

    def test_from_arrays_takes_named_parameters(self):
        sd = torch.load(os.path.join(DATA, "tl_standard_f32.pth"))
        L = 2
        weights = {"W_E": sd["embed.W_E"], "W_pos": sd["pos_embed.W_pos"],
                   "W_U": sd["unembed.W_U"], "b_U": sd["unembed.b_U"],
                   "ln_final.w": sd["ln_final.w"], "ln_final.b": sd["ln_final.b"]}
        for ours, theirs in (("W_Q", "attn.W_Q"), ("W_K", "attn.W_K"), ("W_V", "attn.W_V"),
                             ("W_O", "attn.W_O"), ("b_Q", "attn.b_Q"), ("b_K", "attn.b_K"),
                             ("b_V", "attn.b_V"), ("b_O", "attn.b_O"), ("ln1.w", "ln1.w"),
                             ("ln1.b", "ln1.b")):
            weights[ours] = torch.stack([sd[f"blocks.{l}.{theirs}"] for l in range(L)])
        weights = {k: torch.nn.Parameter(v) for k, v in weights.items()}  # requires_grad
        with mi.Model.from_arrays(weights, n_ctx=12) as m, \
                mi.Model.load(os.path.join(DATA, "tl_standard_f32.safetensors")) as f:
            self.assertTrue(numpy.array_equal(m.forward(TOKENS), f.forward(TOKENS)))

    def test_dtypes_and_layouts(self):
        with mi.Model.create(n_layers=1, n_heads=1, d_model=4, d_head=2, d_vocab=6) as m:
            base = torch.arange(24, dtype=torch.float32).reshape(6, 4) / 8
            for t in (base, base.double(), base.half(), base.bfloat16(), base.t().t(),
                      base.t().contiguous().t(), base.flip(0).flip(0), base.to(torch.int64) * 1,
                      torch.nn.Parameter(base.clone())):
                m.set_weight("W_E", t)
                want = base.to(torch.int64).float() if not t.is_floating_point() else base
                self.assertTrue(numpy.array_equal(m.weight("W_E"), want.numpy()), t.dtype)
            with self.assertRaisesRegex(ValueError, r"expected shape \[6, 4\], got \[4, 6\]"):
                m.set_weight("W_E", base.t())
            with self.assertRaisesRegex(TypeError, "meta.*cpu"):
                m.set_weight("W_E", torch.empty(6, 4, device="meta"))
            with self.assertRaisesRegex(TypeError, "complex"):
                m.set_weight("W_E", base.to(torch.complex64))
            with self.assertRaisesRegex(TypeError, "integers"):
                m.forward(torch.tensor([1.0, 2.0]))
            with self.assertRaisesRegex(IndexError, "out of range"):
                m.forward(torch.tensor([6]))

    def test_torch_output(self):
        with mi.Model.load(os.path.join(DATA, "tl_standard_f32.safetensors")) as m:
            mi.set_output("torch")
            try:
                logits = m.forward(TOKENS)
                self.assertIsInstance(logits, torch.Tensor)
                self.assertEqual(tuple(logits.shape), (8, 20))
                self.assertIsInstance(m.W_Q, torch.Tensor)
                self.assertIsInstance(m.loss(TOKENS, per_token=True), torch.Tensor)
            finally:
                mi.set_output(None)
            self.assertNotIsInstance(m.forward(TOKENS), torch.Tensor)

    def test_tensors_are_not_read_element_by_element(self):
        """A 5000 x 256 tensor goes in through its data pointer: timed against
        a copy of the same tensor through Python floats (the old path), on
        this machine at least 20x faster (measured: see docs/python.md, "Tests")."""
        t = torch.randn(5000, 256)
        with mi.Model.create(n_layers=1, n_heads=1, d_model=256, d_head=4, d_vocab=5000) as m:
            start = time.perf_counter()
            m.set_weight("W_E", t)
            direct = time.perf_counter() - start
            start = time.perf_counter()
            [[float(x) for x in row] for row in t[:500]]  # a tenth of the old work
            old = (time.perf_counter() - start) * 10
            self.assertTrue(numpy.array_equal(m.weight("W_E"), t.numpy()))
            self.assertLess(direct * 20, old, f"direct {direct:.4f} s, old {old:.4f} s")


if __name__ == "__main__":
    unittest.main()
