"""model.OV[l, h] and model.QK[l, h] as d_model-sized factored matrices,
against numpy on the dense matrices formed here from the weights (float64):
singular values and vectors, eigenvalues and vectors, norms, products that
stay factored, slices, and W_E @ OV @ W_U giving libmi's token OV circuit.
Tolerances: the factors are the model's float32 weights widened to double,
so the factored and dense computations differ by rounding only (1e-9
relative); the token circuit is compared with libmi's float32 one (1e-5)."""

import os
import unittest

import mi
from mi.arrays import numpy

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "examples", "models")


@unittest.skipIf(numpy is None, "needs numpy")
class FactoredTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = mi.Model.load(os.path.join(MODELS, "induction-2l"))
        cls.W_V, cls.W_O = cls.m.W_V.astype(float), cls.m.W_O.astype(float)
        cls.W_Q, cls.W_K = cls.m.W_Q.astype(float), cls.m.W_K.astype(float)

    @classmethod
    def tearDownClass(cls):
        cls.m.close()

    def dense_ov(self, l, h):
        return self.W_V[l, h] @ self.W_O[l, h]

    def assertClose(self, a, b, rtol=1e-9):
        a, b = numpy.asarray(a), numpy.asarray(b)
        self.assertEqual(a.shape, b.shape)
        scale = max(numpy.abs(b).max(), 1e-300)
        self.assertLessEqual(numpy.abs(a - b).max(), rtol * scale)

    def test_shapes_and_slices(self):
        self.assertEqual(self.m.OV.shape, (2, 4, 64, 64))
        self.assertEqual(self.m.OV[1].shape, (4, 64, 64))
        self.assertEqual(self.m.OV[:, 2].shape, (2, 64, 64))
        self.assertEqual(self.m.OV[1, 2].rdim, 16)
        self.assertClose(self.m.OV[-1, -1].AB, self.dense_ov(1, 3))
        self.assertClose(self.m.QK[0, 1].AB, self.W_Q[0, 1] @ self.W_K[0, 1].T)
        self.assertClose(self.m.OV[1, 2].BA, self.W_O[1, 2] @ self.W_V[1, 2])
        self.assertClose(self.m.OV[1, 2].T.AB, self.dense_ov(1, 2).T)
        with self.assertRaises(IndexError):
            self.m.OV[2, 0]
        with self.assertRaises(IndexError):
            self.m.OV[0, 0, 0]

    def test_svd_equals_numpys(self):
        for l, h in ((0, 3), (1, 0)):
            dense = self.dense_ov(l, h)
            U, S, V = self.m.OV[l, h].svd()
            s = numpy.linalg.svd(dense, compute_uv=False)
            self.assertEqual(S.shape, (16,))
            self.assertClose(S, s[:16])
            self.assertLess(s[16], 1e-9 * s[0])  # the rest is rank deficiency
            self.assertClose(U @ numpy.diag(S) @ V.T, dense)
            self.assertClose(U.T @ U, numpy.eye(16), 1e-12)
            self.assertClose(V.T @ V, numpy.eye(16), 1e-12)
            # Singular vectors up to sign, where the values are well apart.
            u, _, vh = numpy.linalg.svd(dense)
            for i in range(3):
                self.assertAlmostEqual(abs(U[:, i] @ u[:, i]), 1.0, places=8)
                self.assertAlmostEqual(abs(V[:, i] @ vh[i]), 1.0, places=8)

    def test_eigenvalues_and_vectors_equal_numpys(self):
        for fm, dense in ((self.m.OV[1, 1], self.dense_ov(1, 1)),
                          (self.m.QK[0, 3], self.W_Q[0, 3] @ self.W_K[0, 3].T)):
            values, vectors = fm.eig()
            want = numpy.linalg.eigvals(dense)
            want = want[numpy.argsort(-numpy.abs(want), kind="stable")][:16]
            self.assertClose(numpy.sort_complex(values), numpy.sort_complex(want), 1e-8)
            self.assertClose(fm.eigenvalues, values)
            # Each column is an eigenvector of the dense matrix.
            self.assertClose(dense @ vectors, vectors * values, 1e-8)
            self.assertClose(numpy.linalg.norm(vectors, axis=0), numpy.ones(16), 1e-12)

    def test_norm_and_products_stay_factored(self):
        ov0, ov1 = self.m.OV[0, 3], self.m.OV[1, 0]
        self.assertAlmostEqual(ov0.norm(), numpy.linalg.norm(self.dense_ov(0, 3)), places=9)
        self.assertClose(self.m.OV.norm(), numpy.linalg.norm(self.W_V @ self.W_O, axis=(-2, -1)))
        virtual = ov0 @ ov1
        self.assertIsInstance(virtual, mi.FactoredMatrix)
        self.assertEqual(virtual.rdim, 16)
        self.assertClose(virtual.AB, self.dense_ov(0, 3) @ self.dense_ov(1, 0))
        x = numpy.arange(64.0)[None, :]
        self.assertClose((x @ ov0).AB, x @ self.dense_ov(0, 3))
        self.assertClose((ov0 @ x.T).AB, self.dense_ov(0, 3) @ x.T)
        self.assertClose((2 * ov0).AB, 2 * self.dense_ov(0, 3))

    def test_token_circuit_is_libmis_ov(self):
        token = self.m.W_E @ self.m.OV[1, 2] @ self.m.W_U
        self.assertEqual(token.shape, (101, 101))
        with self.m.ov(1, 2) as c:
            want = c.dense()
            self.assertClose(numpy.asarray(token), want, 1e-5)
            self.assertClose(token.AB, want, 1e-5)
        with token.circuit() as c:
            best, _ = c.topk(1)
            self.assertTrue(numpy.array_equal(best[:, 0], numpy.argmax(token.AB, axis=1)))

    def test_asarray_refuses_large_matrices(self):
        self.assertEqual(numpy.asarray(self.m.OV[0, 0]).shape, (64, 64))
        limit, mi.arrays.MATERIALISE_LIMIT = mi.arrays.MATERIALISE_LIMIT, 64 * 64 - 1
        try:
            with self.assertRaisesRegex(ValueError, "64 x 64 has 4,096 entries"):
                numpy.asarray(self.m.OV[0, 0])
        finally:
            mi.arrays.MATERIALISE_LIMIT = limit


@unittest.skipIf(numpy is not None, "without numpy only")
class NoNumpyTest(unittest.TestCase):
    def test_factored_matrices_say_they_need_numpy(self):
        with mi.Model.load(os.path.join(MODELS, "induction-2l")) as m:
            with self.assertRaisesRegex(ImportError, "numpy"):
                m.OV
            with self.assertRaisesRegex(ImportError, "numpy"):
                m.QK


if __name__ == "__main__":
    unittest.main()
