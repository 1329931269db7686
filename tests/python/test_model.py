"""The Python bindings' model API, with and without numpy (MI_EXPECT_NUMPY
says which this run must be; MI_PYTHON_NO_NUMPY forces the plain path)."""

import array
import ctypes
import gc
import os
import unittest

import mi
from mi.arrays import numpy


def small_model(**kw):
    shape = dict(n_layers=2, n_heads=2, d_model=4, d_head=3, d_vocab=5, n_ctx=6)
    shape.update(kw)
    return mi.Model.create(**shape)


def tolist(x):
    return x.tolist() if hasattr(x, "tolist") else x


class ModelTest(unittest.TestCase):
    def test_numpy_presence_is_as_expected(self):
        self.assertEqual(numpy is not None, os.environ.get("MI_EXPECT_NUMPY") == "1")

    def test_version(self):
        self.assertEqual(mi.version(), "0.1.0")

    def test_round_trip_from_lists_and_buffers(self):
        with small_model(parts=["ln", "qkv_bias"]) as m:
            rows = [[i * 4 + j + 0.5 for j in range(3)] for i in range(4)]
            m.set_weight("W_Q", rows, layer=1, head=1)
            self.assertEqual(tolist(m.weight("W_Q", 1, 1)), rows)
            self.assertEqual(tolist(m.weight("W_Q", 0, 0)), [[0.0] * 3] * 4)
            m.set_weight("b_Q", array.array("f", [1.5, -2.0, 3.25]), 0, 1)
            self.assertEqual(tolist(m.weight("b_Q", 0, 1)), [1.5, -2.0, 3.25])
            flat = array.array("d", [float(i) for i in range(12)])
            m.set_weight("W_K", memoryview(flat).cast("B").cast("d", (4, 3)), 0, 0)
            self.assertEqual(tolist(m.weight("W_K"))[3], [9.0, 10.0, 11.0])

    @unittest.skipIf(numpy is None, "needs numpy")
    def test_numpy_strided_input(self):
        with small_model() as m:
            big = numpy.arange(40, dtype=numpy.float32).reshape(5, 8)
            m.set_weight("W_E", big[:, ::2])  # column stride 2: copied first
            m.set_weight("W_U", big[:4, 1:6])  # row stride 8 > 5 columns: no copy
            self.assertTrue(numpy.array_equal(m.weight("W_E"), big[:, ::2]))
            self.assertTrue(numpy.array_equal(m.weight("W_U"), big[:4, 1:6]))
            self.assertEqual(m.weight("W_U").dtype, numpy.float32)

    def test_errors_carry_libmi_message(self):
        with small_model() as m:
            with self.assertRaisesRegex(IndexError, "layer 2 out of range"):
                m.set_weight("W_Q", [[1.0] * 3] * 4, layer=2)
            with self.assertRaises(mi.MiError) as caught:
                m.weight("W_pos")
            self.assertEqual(caught.exception.status, -6)
            with self.assertRaises(ValueError):
                m.weight("W_nope")
        with self.assertRaises(mi.MiError):
            mi.Model.create(n_layers=1, n_heads=3, n_kv_heads=2, d_model=4, d_head=2, d_vocab=5)

    def test_processing_and_layout(self):
        with small_model(parts=["ln", "ln_final"]) as m:
            m.set_weight("ln1.w", [2.0, 2.0, 2.0, 2.0], layer=0)
            m.set_weight("W_Q", [[1.0, 0.0, 0.0]] * 4, 0, 0)
            self.assertEqual(m.layout, "memory")
            self.assertEqual(m.processing, set())
            m.process(["fold_ln", "center_unembed"])
            self.assertEqual(m.processing, {"fold_ln", "center_unembed"})
            self.assertEqual(tolist(m.weight("W_Q", 0, 0))[0], [2.0, 0.0, 0.0])
            self.assertEqual(tolist(m.weight("ln1.w", 0)), [1.0] * 4)
            with self.assertRaises(mi.MiError) as caught:
                m.process("fold_ln")
            self.assertEqual(caught.exception.name, "wrong state")

    def test_from_arrays(self):
        L, H, D, dh, V = 2, 2, 4, 3, 5
        W_Q = [[[[l + h + i * 0.25 + j for j in range(dh)] for i in range(D)]
                for h in range(H)] for l in range(L)]
        zeros = [[[[0.0] * dh] * D] * H] * L
        weights = {"W_E": [[1.0] * D] * V, "W_Q": W_Q, "W_K": zeros, "W_V": zeros,
                   "W_O": [[[[0.0] * D] * dh] * H] * L, "W_U": [[0.0] * V] * D,
                   "ln1.w": [[3.0] * D] * L}
        with mi.Model.from_arrays(weights, n_layers=L, d_vocab=V) as m:
            self.assertEqual(m.processing, {"fold_ln"})
            self.assertEqual(m.config["parts"], mi.PARTS["ln"])
            folded = [[3.0 * x for x in row] for row in W_Q[1][0]]
            self.assertEqual(tolist(m.weight("W_Q", 1, 0)), folded)

    def test_negative_sizes_are_refused_before_the_call(self):
        # ctypes would wrap -2**64 + 32 to 32: C would then fill 32 values
        # into the one-element buffer Python sized from the raw number.
        # (numpy refuses the negative shape itself, with ValueError.)
        with small_model() as m, m.ov(0, 0) as ov:
            with self.assertRaises(ValueError):
                ov.singular_values(count=-(2 ** 64) + 32)
            with self.assertRaises(OverflowError):
                ov.singular_values(count=2 ** 64 + 1)
            with self.assertRaises(ValueError):
                m.paths(1, top=-(2 ** 64) + 100)
            with self.assertRaises(IndexError):
                m.weight("W_Q", layer=-3)
            self.assertEqual(tolist(m.weight("W_Q", layer=-1)), tolist(m.weight("W_Q", 1)))
            self.assertEqual(len(ov.singular_values(count=2)), 2)

    def test_close_is_idempotent_and_final(self):
        m = small_model()
        m.close()
        m.close()
        with self.assertRaises(ValueError):
            m.config
        small_model()  # freed by the finaliser
        gc.collect()


if __name__ == "__main__":
    unittest.main()
