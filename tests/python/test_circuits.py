"""Circuits, summaries, composition and paths through the bindings, each
against a dense double reference computed here from model.weight().

Tolerances: libmi computes products in float32 (relative rounding about
6e-8 per operation, sums of at most d_model = 6 terms of O(1) factors
here) and small work in double, so an entry or a norm agrees with the double
reference to about 1e-6 relative; the tests allow 1e-4 relative to the
largest entry, far below the O(1) differences any wrong formula makes."""

import gc
import math
import os
import re
import unittest

import mi
from mi.arrays import numpy
from mi._native import PROTOTYPES
from reference import (add_row, eigenvalues_from_traces, frobenius, matmul, random_model,
                       scale, tolist, transpose)

TOL = 1e-4
HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "include", "mi.h")


class CircuitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = random_model()
        W = lambda name, l=0, h=0: tolist(cls.model.weight(name, l, h))
        cls.W = staticmethod(W)
        cls.E, cls.P, cls.U = W("W_E"), W("W_pos"), W("W_U")

    @classmethod
    def tearDownClass(cls):
        cls.model.close()

    def assertClose(self, got, want, tol=TOL):
        got, want = tolist(got), tolist(want)
        flat = lambda x: [v for r in x for v in flat(r)] if isinstance(x, list) else [x]
        g, w = flat(got), flat(want)
        self.assertEqual(len(g), len(w))
        size = max([abs(v) for v in w] + [1e-300])
        for a, b in zip(g, w):
            self.assertLessEqual(abs(a - b), tol * size, f"{a} vs {b}")

    def ov_ref(self, l, h):
        return matmul(matmul(matmul(self.E, self.W("W_V", l, h)), self.W("W_O", l, h)), self.U)

    def qk_ref(self, l, h, q, k, bias=True, s=True):
        A = matmul(q, self.W("W_Q", l, h))
        B = matmul(k, self.W("W_K", l, h))
        if bias:
            A, B = add_row(A, self.W("b_Q", l, h)), add_row(B, self.W("b_K", l, h))
        M = matmul(A, transpose(B))
        return scale(M, 1 / math.sqrt(3)) if s else M

    def test_every_header_function_has_a_prototype(self):
        with open(HEADER) as f:
            declared = set(re.findall(r"MI_API [^;(]*?\b(mi_\w+)\s*\(", f.read()))
        self.assertGreater(len(declared), 60)
        self.assertEqual(declared, {p[0] for p in PROTOTYPES})

    def test_qk_token_and_positional(self):
        with self.model.qk(1, 0) as c:
            ref = self.qk_ref(1, 0, self.E, self.E)
            self.assertEqual(c.shape, (7, 7))
            self.assertEqual(c.rank, 3)
            self.assertClose(c.dense(), ref)
            self.assertClose(c.entry(2, 5), ref[2][5])
            self.assertClose(c.rows(1, 3), ref[1:3])
            self.assertClose(c.rows(4), ref[4:5])
            self.assertClose(c.cols(2, 4), [r[2:4] for r in ref])
        with self.model.qk(0, 1, query="pos", key="token", bias=False, scale=False) as c:
            self.assertEqual(c.shape, (5, 7))
            self.assertClose(c.dense(), self.qk_ref(0, 1, self.P, self.E, False, False))
        with self.assertRaises(ValueError):
            self.model.qk(0, 0, query="position")

    def test_ov_direct_transpose_compose(self):
        ov, direct = self.model.ov(0, 1), self.model.direct()
        ref_ov, ref_direct = self.ov_ref(0, 1), matmul(self.E, self.U)
        self.assertClose(ov.dense(), ref_ov)
        self.assertClose(direct.dense(), ref_direct)
        self.assertClose(ov.T.dense(), transpose(ref_ov))
        self.assertClose((ov @ direct.transpose()).dense(), matmul(ref_ov, transpose(ref_direct)))
        self.assertClose(ov.frobenius_norm(), frobenius(ref_ov))
        with self.assertRaises(mi.MiError) as caught:
            ov.compose(self.model.qk(0, 0, query="pos"))
        self.assertEqual(caught.exception.name, "shape mismatch")
        ov.close()
        direct.close()

    def test_from_factors(self):
        A = [[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]]
        B = [[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, -1.0, 0.5]]
        with mi.Circuit.from_factors(A, B) as c:
            self.assertEqual((c.shape, c.rank), ((3, 4), 2))
            self.assertClose(c.dense(), matmul(A, B), 0)  # small integers: exact
        with self.assertRaises(ValueError):
            mi.Circuit.from_factors(A, A)

    def test_topk_both_axes(self):
        with self.model.ov(1, 1) as c:
            ref = self.ov_ref(1, 1)
            for axis in (0, 1):
                lines = ref if axis == 1 else transpose(ref)
                for largest in (True, False):
                    index, value = c.topk(3, axis=axis, largest=largest)
                    index, value = tolist(index), tolist(value)
                    self.assertEqual(len(index), 7)
                    for line, idx, val in zip(lines, index, value):
                        want = sorted(line, reverse=largest)[:3]
                        self.assertClose(val, want)
                        self.assertClose([line[j] for j in idx], want)
            index, value = c.topk(2, start=3, stop=5)
            self.assertEqual(len(tolist(index)), 2)
            self.assertClose(value, [sorted(r, reverse=True)[:2] for r in ref[3:5]])

    def test_row_stats_both_axes(self):
        # Against two-pass statistics of the reference matrix (double from the
        # float32 weights); the circuit's factors are float32 products of
        # them, hence TOL (1e-4 of the line's scale), as for the entries.
        with self.model.ov(1, 1) as c:
            ref = self.ov_ref(1, 1)
            for axis in (0, 1):
                lines = ref if axis == 1 else transpose(ref)
                mean, std = (tolist(x) for x in c.row_stats(axis=axis))
                self.assertEqual(len(mean), len(lines))
                for line, mu, sd in zip(lines, mean, std):
                    want_mu = sum(line) / len(line)
                    want_sd = math.sqrt(sum((x - want_mu) ** 2 for x in line) / len(line))
                    size = max(abs(x) for x in line)
                    self.assertLessEqual(abs(mu - want_mu), TOL * size)
                    self.assertLessEqual(abs(sd - want_sd), TOL * size)
            mean, std = c.row_stats(start=2, stop=4)
            self.assertEqual(tolist(std), tolist(c.row_stats()[1])[2:4])
            with self.assertRaises(IndexError):
                c.row_stats(start=3, stop=3)

    def test_eigenvalues_singular_values_and_summary(self):
        with self.model.ov(1, 0) as c:
            ref = self.ov_ref(1, 0)
            want = eigenvalues_from_traces(ref, 3)
            got = list(c.eigenvalues())
            self.assertEqual(len(got), 3)
            self.assertTrue(all(isinstance(z, complex) for z in got))
            size = abs(want[0])
            for a in got:  # as a set: a conjugate pair's order is libmi's choice
                self.assertLess(min(abs(complex(a) - b) for b in want), TOL * size)
            self.assertEqual([abs(z) for z in got], sorted((abs(z) for z in got), reverse=True))
            nonzero = [z for z in want if abs(z) > 1e-6 * size]
            score = sum(z.real for z in nonzero) / sum(abs(z) for z in nonzero)
            summary = c.eigen_summary()
            self.assertAlmostEqual(summary.copying_score, score, delta=TOL)
            self.assertAlmostEqual(c.copying_score(), score, delta=TOL)
            self.assertEqual(summary.nonzero, 3)
            positive = sum(abs(z) for z in nonzero if abs(z.imag) < 1e-9 * size and z.real > 0)
            self.assertAlmostEqual(summary.positive_real_fraction,
                                   positive / sum(abs(z) for z in nonzero), delta=TOL)
            sv = tolist(c.singular_values())
            self.assertEqual(len(sv), 3)
            # Σσ² = ‖M‖²_F, and σ₁ by power iteration on MᵀM.
            self.assertAlmostEqual(sum(s * s for s in sv) / frobenius(ref) ** 2, 1, delta=TOL)
            v = [1.0] * 7
            for _ in range(300):
                v = matmul([v], matmul(transpose(ref), ref))[0]
                v = [x / math.sqrt(sum(y * y for y in v)) for x in v]
            sigma1 = math.sqrt(sum(x * x for x in matmul(ref, [[x] for x in v]) for x in x))
            self.assertAlmostEqual(sv[0] / sigma1, 1, delta=TOL)

    def test_diag_rank_copying_accuracy_prev_token(self):
        with self.model.ov(0, 0) as c:
            ref = self.ov_ref(0, 0)
            ranks = [sum(x > row[i] for x in row) for i, row in enumerate(ref)]
            self.assertEqual(tolist(c.diag_rank()), ranks)
            self.assertEqual(tolist(c.diag_rank(2, 4)), ranks[2:4])
            top1, top5 = c.copying_accuracy()
            self.assertAlmostEqual(top1, sum(r < 1 for r in ranks) / 7)
            self.assertAlmostEqual(top5, sum(r < 5 for r in ranks) / 7)
        with self.model.qk(0, 1, "pos", "pos") as c:
            ref = self.qk_ref(0, 1, self.P, self.P)
            best = [max(range(p + 1), key=lambda s: (ref[p][s], -s)) for p in range(1, 5)]
            want = sum(b == p - 1 for b, p in zip(best, range(1, 5))) / 4
            self.assertAlmostEqual(c.prev_token_share(), want)
        with self.assertRaises(mi.MiError) as caught:
            self.model.qk(0, 0, query="pos").diag_rank()
        self.assertEqual(caught.exception.name, "shape mismatch")

    def test_k_composition_circuit(self):
        with self.model.k_composition_circuit(0, 1, 1, 0) as c:
            A = add_row(matmul(self.E, self.W("W_Q", 1, 0)), self.W("b_Q", 1, 0))
            keys = matmul(matmul(matmul(self.E, self.W("W_V", 0, 1)), self.W("W_O", 0, 1)),
                          self.W("W_K", 1, 0))
            B = add_row(keys, self.W("b_K", 1, 0))
            self.assertClose(c.dense(), scale(matmul(A, transpose(B)), 1 / math.sqrt(3)))
        with self.assertRaises(mi.MiError) as caught:
            self.model.k_composition_circuit(1, 0, 0, 1)
        self.assertEqual(caught.exception.status, -1)

    def test_composition_scores_and_baseline(self):
        wov = lambda l, h: matmul(self.W("W_V", l, h), self.W("W_O", l, h))
        wqk = lambda l, h: matmul(self.W("W_Q", l, h), transpose(self.W("W_K", l, h)))
        for kind in "QKV":
            got = tolist(self.model.composition_scores(kind))
            for h1 in range(2):
                for h2 in range(2):
                    ov1 = wov(0, h1)
                    second = {"Q": wqk(1, h2), "K": transpose(wqk(1, h2)), "V": wov(1, h2)}[kind]
                    want = frobenius(matmul(ov1, second)) / (frobenius(ov1) * frobenius(second))
                    self.assertAlmostEqual(got[0][h1][1][h2], want, delta=TOL)
                    self.assertEqual(got[1][h1][0][h2], 0.0)
        with self.assertRaises(ValueError):
            self.model.composition_scores("X")
        tables = tolist(self.model.composition_tables("VQK"))  # one call, same dense reference
        for t, kind in enumerate("VQK"):
            for h1 in range(2):
                for h2 in range(2):
                    ov1 = wov(0, h1)
                    second = {"Q": wqk(1, h2), "K": transpose(wqk(1, h2)), "V": wov(1, h2)}[kind]
                    want = frobenius(matmul(ov1, second)) / (frobenius(ov1) * frobenius(second))
                    self.assertAlmostEqual(tables[t][0][h1][1][h2], want, delta=TOL)
                    self.assertEqual(tables[t][1][h1][0][h2], 0.0)
        with self.assertRaises(ValueError):
            self.model.composition_tables("QX")
        mean, std, sem = self.model.composition_baseline()
        self.assertEqual((mean, std, sem), self.model.composition_baseline())
        self.assertTrue(0 < mean < 1 and std > 0)
        self.assertAlmostEqual(sem, std / 10)

    def test_paths(self):
        self.assertEqual(self.model.path_count(), 9)
        self.assertEqual(self.model.path_count(1), 5)
        paths = self.model.paths()
        self.assertEqual([p.heads for p in paths[:3]], [(), ((0, 0),), ((0, 0), (1, 0))])
        self.assertEqual(len(paths), 9)
        for p in paths:
            ref = self.E
            for l, h in p.heads:
                ref = matmul(matmul(ref, self.W("W_V", l, h)), self.W("W_O", l, h))
            ref = matmul(ref, self.U)
            self.assertAlmostEqual(p.norm / frobenius(ref), 1, delta=TOL)
            with self.model.path(p.heads) as c:
                self.assertClose(c.dense(), ref)
        top = self.model.paths(top=4)
        self.assertEqual([p.norm for p in top], sorted((p.norm for p in paths), reverse=True)[:4])
        self.assertEqual(paths[0].label, "direct")
        self.assertEqual(paths[2].label, "L0H0->L1H0")

    def test_path_callback_circuits_stop_and_exceptions(self):
        seen = []

        def check(path, circuit):
            self.assertAlmostEqual(circuit.frobenius_norm() / path.norm, 1, delta=TOL)
            seen.append(circuit)
            return path.order == 2  # stop at the first virtual head

        delivered = self.model.paths(callback=check, circuits=True)
        self.assertEqual(len(delivered), 3)
        with self.assertRaises(ValueError):  # borrowed circuits do not outlive the callback
            seen[0].shape

        def fail(path, circuit):
            raise KeyError("from the callback")

        with self.assertRaises(KeyError):
            self.model.paths(callback=fail)


class LifetimeTest(unittest.TestCase):
    def test_model_closed_before_its_circuits(self):
        model = random_model()
        ov, qk = model.ov(0, 0), model.qk(1, 1)
        want = tolist(ov.dense())
        model.close()
        with self.assertRaises(ValueError):
            model.ov(0, 0)
        self.assertEqual(tolist(ov.dense()), want)  # the circuit kept the model alive
        product = ov @ ov.T
        ov.close()
        self.assertEqual(product.shape, (7, 7))
        del product
        gc.collect()
        qk.close()
        qk.close()
        with self.assertRaises(ValueError):
            qk.rank

    def test_finalisers_free_in_any_order(self):
        for order in range(3):
            model = random_model()
            objects = [model, model.ov(0, 1), model.direct().T]
            objects = objects[order:] + objects[:order]
            while objects:
                objects.pop()
                gc.collect()

    def test_indices_are_checked_in_python(self):
        with random_model() as model:
            with self.assertRaisesRegex(IndexError, "head 2 out of range"):
                model.ov(0, 2)
            # Negative indices count from the end, as in Python.
            with model.ov(-1, -1) as last, model.ov(1, 1) as same:
                self.assertEqual(last.entry(0, 0), same.entry(0, 0))
            with model.ov(0, 0) as c:
                with self.assertRaisesRegex(IndexError, "row 7 out of range"):
                    c.entry(7, 0)
                self.assertEqual(c.entry(-1, 0), c.entry(6, 0))
                with self.assertRaisesRegex(ValueError, "k = 8, but a line has 7"):
                    c.topk(8)

    @unittest.skipIf(numpy is None, "needs numpy")
    def test_numpy_results_are_written_in_place(self):
        with random_model() as model, model.ov(0, 0) as c:
            rows = c.rows(0, 7)
            self.assertEqual((rows.dtype, rows.shape), (numpy.float32, (7, 7)))
            self.assertTrue(rows.flags.owndata and rows.flags.c_contiguous)
            self.assertEqual(c.eigenvalues().dtype, numpy.complex128)
            index, value = c.topk(2, axis=0)
            self.assertEqual((index.dtype, value.shape), (numpy.uintp, (7, 2)))
            self.assertEqual(model.composition_scores("K").shape, (2, 2, 2, 2))


class KernelTest(unittest.TestCase):
    def test_threads_and_kernel_set(self):
        mi.set_num_threads(2)
        self.assertEqual(mi.get_num_threads(), 2)
        mi.set_num_threads(0)
        with self.assertRaises(mi.MiError) as caught:
            mi.set_num_threads(5000)
        self.assertEqual(caught.exception.status, -1)
        self.assertRegex(mi.kernel_set(), r"^\w+$")
        with self.assertRaises(mi.MiError) as caught:  # BLIS has started: too late
            mi.select_fast_kernels()
        self.assertEqual(caught.exception.name, "wrong state")


if __name__ == "__main__":
    unittest.main()
