"""mi_circuit_row_summary and sweep files through the bindings, against a
reference computed here from each circuit's dense float32 entries.

Ranks (top-k of rows and columns, z-score ranks) are compared exactly: they
are rankings of the same float32 entries the library streams, with ties to
the lower index, so a wrong row, exclusion or tie rule changes them. Means
and standard deviations are two-pass double sums here against the library's
one pass: they agree to about 1e-15 relative on entries of order 1; the test
allows 1e-12 of the row's scale. The diagonal rank counts entries above the
diagonal computed in double (mi_circuit_entry), as mi_circuit_diag_rank does."""

import math
import os
import subprocess
import tempfile
import unittest

import mi
from reference import random_model, tolist

SIZE_MAX = (1 << 64) - 1


def best(values, k, exclude=None):
    """Indices and values of the k largest, ties to the lower index; unfilled: SIZE_MAX, -inf."""
    order = sorted((i for i in range(len(values)) if i != exclude and values[i] > -math.inf),
                   key=lambda i: (-values[i], i))[:k]
    idx = order + [SIZE_MAX] * (k - len(order))
    return idx, [values[i] for i in order] + [-math.inf] * (k - len(order))


class RowSummary(unittest.TestCase):
    def setUp(self):
        self.model = random_model(seed=11, d_vocab=23, d_model=8, d_head=4)

    def check(self, circuit, i0, i1, k=4, kc=3, kz=2):
        dense = tolist(circuit.dense())
        n = len(dense)
        got = mi.row_summary(circuit, i0, i1, k=k, k_columns=kc, k_row_z=kz, k_col_z=kz)
        stats = []
        for t, i in enumerate(range(i0, i1)):
            row = dense[i]
            idx, val = best(row, k)
            self.assertEqual(got["topk_index"][t * k:(t + 1) * k], idx)
            self.assertEqual(got["topk_value"][t * k:(t + 1) * k], val)
            d = circuit.entry(i, i)
            self.assertEqual(got["diag_rank"][t], sum(x > d for j, x in enumerate(row) if j != i))
            mean = sum(row) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in row) / n)
            scale = max(abs(x) for x in row)
            self.assertLess(abs(got["row_mean"][t] - mean), 1e-12 * scale)
            self.assertLess(abs(got["row_std"][t] - sd), 1e-12 * scale)
            z = [(x - mean) / sd for x in row]
            zi, zv = best(z, kz, exclude=i)
            self.assertEqual(got["row_z_index"][t * kz:(t + 1) * kz], zi)
            for a, b in zip(got["row_z"][t * kz:(t + 1) * kz], zv):
                self.assertLess(abs(a - b), 1e-9)
            stats.append(z)
        for j in range(n):
            col = [dense[i][j] if i0 <= i < i1 else -math.inf for i in range(n)]
            idx, val = best(col, kc)
            self.assertEqual(got["col_index"][j * kc:(j + 1) * kc], idx)
            zcol = [stats[i - i0][j] if i0 <= i < i1 else -math.inf for i in range(n)]
            zi, _ = best(zcol, kz, exclude=j)
            self.assertEqual(got["col_z_index"][j * kz:(j + 1) * kz], zi)

    def test_ov_rows(self):
        self.check(self.model.ov(1, 0), 0, 23)

    def test_qk_row_range(self):
        self.check(self.model.qk(0, 1, bias=True), 5, 17)

    def test_one_row_keeps_unfilled_column_ranks(self):
        self.check(self.model.ov(0, 0), 9, 10)


class PlanThroughBindings(unittest.TestCase):
    """The whole sweep from Python: plan, units, merge; in one process the
    table must be mi_model_skip_trigrams's triples, in its order."""

    def test_plan_units_merge(self):
        import ctypes
        from mi import _native
        model = random_model(seed=3, d_vocab=31, d_model=8, d_head=4)
        opt = _native.SweepOptions()
        _native.lib.mi_sweep_options_init(ctypes.byref(opt), ctypes.sizeof(opt))
        opt.unit_rows, opt.k = 7, 3
        plan, worker = ctypes.c_void_p(), ctypes.c_void_p()
        _native.lib.mi_sweep_plan_new(ctypes.byref(plan), model._h(), None, 0, None, 0,
                                      ctypes.byref(opt))
        try:
            units = _native.lib.mi_sweep_plan_unit_count(plan)
            self.assertEqual(units, 2 * 2 * 2 * 5)  # 4 heads, OV and QK, 31 rows in 5 units
            with tempfile.TemporaryDirectory() as tmp:
                _native.lib.mi_sweep_worker_new(ctypes.byref(worker), plan)
                for u in reversed(range(units)):  # any order gives the same file
                    _native.lib.mi_sweep_worker_run(worker, u, tmp.encode())
                _native.lib.mi_sweep_worker_free(worker)
                out = os.path.join(tmp, "all.st")
                _native.lib.mi_sweep_plan_merge(plan, tmp.encode(), out.encode())
                data = mi.load_sweep(out)
        finally:
            _native.lib.mi_sweep_plan_free(plan)
        table = model.skip_trigrams(1000)
        self.assertEqual(len(tolist(data["skip_trigrams.score"])), len(table))
        self.assertEqual(tolist(data["skip_trigrams.src"]), [t.src for t in table])
        self.assertEqual(tolist(data["skip_trigrams.dst"]), [t.dst for t in table])
        self.assertEqual(tolist(data["skip_trigrams.out"]), [t.out for t in table])
        # The sweep z-scores dense float32 entries; the search takes closed-form
        # row statistics and each kept entry in double (issue 12): the scores
        # differ by the entries' float32 rounding (about 1e-7 relative).
        for a, t in zip(tolist(data["skip_trigrams.score"]), table):
            self.assertLessEqual(abs(a - t.score), 1e-5 * max(1.0, abs(t.score)))


def mi_binary():
    lib = os.environ.get("MI_LIBRARY")
    path = lib and os.path.join(os.path.dirname(lib), "..", "tools", "mi", "mi")
    return path if path and os.path.exists(path) else None


@unittest.skipUnless(mi_binary(), "the mi command is not beside MI_LIBRARY")
class LoadSweep(unittest.TestCase):
    def test_results_file(self):
        shipped = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "models",
                               "skip-trigram-1l", "model.safetensors")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "s.st")
            subprocess.run([mi_binary(), "sweep", shipped, "-o", out, "-k", "3"], check=True,
                           capture_output=True)
            data = mi.load_sweep(out)
        meta = data["__metadata__"]
        self.assertEqual(meta["format"], "libmi-sweep/1")
        self.assertEqual(meta["libmi_version"], mi.version())
        with mi.Model.load(shipped) as model:
            ov = tolist(model.ov(0, 2).dense())
            index, value = tolist(data["L0H2.ov.topk_index"]), tolist(data["L0H2.ov.topk_value"])
            for i in (0, 100, 292):
                idx, val = best(ov[i], 3)
                self.assertEqual(index[i], idx)
                # The command picks BLIS's fast kernels, this process may not:
                # their float32 sums differ by a few ulp (1e-7 relative).
                for a, b in zip(value[i], val):
                    self.assertLess(abs(a - b), 1e-5 * abs(b))
            table = model.skip_trigrams(5)
        self.assertEqual(tolist(data["skip_trigrams.src"])[:5], [t.src for t in table])
        for a, t in zip(tolist(data["skip_trigrams.score"])[:5], table):
            self.assertLess(abs(a - t.score), 1e-4)


if __name__ == "__main__":
    unittest.main()
