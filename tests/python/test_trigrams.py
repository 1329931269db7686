"""mi_model_skip_trigrams through the bindings, against the search redone
here in Python from each head's dense circuits.

The reference z-scores use two-pass double statistics of the float32
entries of mi_circuit_dense; the library's come in closed form from the
factors, in double (mi_circuit_row_stats, each kept entry recomputed from
the factors). The two differ by the float32 rounding of the dense entries:
a d_head-term product rounds to about d_head * 2**-24 (4e-6 at d_head 64)
of its terms' scale, and over the row's sd that moves a z-score by about
1e-7 relative on these models (7e-7 at z = 7.5 is the largest seen). The
test allows 1e-5 * max(1, |z|). Ranks are compared exactly: a wrong row,
column, exclusion or tie rule changes which tokens come out."""

import os
import unittest

import mi
from helpers import z_rows
from reference import random_model, tolist

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "models",
                       "skip-trigram-1l", "model.safetensors")
Z_TOL = 1e-5


def reference(model, count, bias=True, n_out=2, n_dst=2):
    cfg = model.config
    triples = []  # (score, arrival, tuple)
    for l in range(cfg["n_layers"]):
        for h in range(cfg["n_heads"]):
            ov = z_rows(tolist(model.ov(l, h).dense()))
            qk = z_rows(tolist(model.qk(l, h, bias=bias).dense()))
            n = len(ov)
            for src in range(n):
                outs = [] if ov[src] is None else sorted(
                    (o for o in range(n) if o != src), key=lambda o: (-ov[src][o], o))[:n_out]
                dsts = sorted((d for d in range(n) if d != src and qk[d] is not None),
                              key=lambda d: (-qk[d][src], d))[:n_dst]
                for o in outs:
                    for d in dsts:
                        q, v = qk[d][src], ov[src][o]
                        triples.append((min(q, v), len(triples), (l, h, src, d, o, q, v)))
    triples.sort(key=lambda t: (-t[0], t[1]))
    return [t[2] + (t[0],) for t in triples[:count]]


class SkipTrigramTest(unittest.TestCase):
    def assertSame(self, got, want):
        self.assertEqual([t[:5] for t in got], [w[:5] for w in want])
        for g, w in zip(got, want):
            for a, b in zip(g[5:], w[5:]):
                self.assertLessEqual(abs(a - b), Z_TOL * max(1.0, abs(b)), (g, w))

    def test_shipped_model_matches_a_python_search(self):
        with mi.Model.load(SHIPPED) as m:
            for bias in (True, False):
                got = m.skip_trigrams(24, bias=bias)
                self.assertEqual(len(got), 24)
                self.assertSame(got, reference(m, 24, bias=bias))
                for t in got:
                    self.assertEqual(t.score, min(t.qk_z, t.ov_z))

    def test_per_source_counts_and_progress(self):
        with mi.Model.load(SHIPPED) as m:
            seen = []
            got = m.skip_trigrams(40, outputs_per_source=3, destinations_per_source=1,
                                  progress=lambda done, total: seen.append((done, total)))
            self.assertSame(got, reference(m, 40, n_out=3, n_dst=1))
            heads = m.config["n_layers"] * m.config["n_heads"]
            # One step a circuit: two a head.
            self.assertEqual(seen, [(i + 1, 2 * heads) for i in range(2 * heads)])

    def test_fewer_triples_than_asked(self):
        # d_vocab 7, 2 x 2 heads: at most 7 sources x 2 x 2 triples a head.
        m = random_model()
        got = m.skip_trigrams(1000)
        self.assertEqual(len(got), 4 * 7 * 4)
        self.assertSame(got, reference(m, 1000))
        self.assertEqual(m.skip_trigrams(0), [])
        m.close()

    def test_threads_and_blocks_do_not_change_the_result(self):
        # d_vocab 4500: 24 row tiles of the selection kernels a circuit, handed
        # out to 3 threads. The result is the one-thread one.
        m = random_model(seed=3, n_layers=1, n_heads=2, d_model=8, d_head=4, d_vocab=4500)
        before = mi.get_num_threads()
        try:
            mi.set_num_threads(1)
            one = m.skip_trigrams(50)
            mi.set_num_threads(3)
            three = m.skip_trigrams(50)
        finally:
            mi.set_num_threads(before)
            m.close()
        self.assertEqual(one, three)
        self.assertEqual(len(one), 50)

    def test_bad_options(self):
        with mi.Model.load(SHIPPED) as m:
            for kwargs in ({"outputs_per_source": 0}, {"destinations_per_source": 0}):
                with self.assertRaises(mi.MiError) as e:
                    m.skip_trigrams(5, **kwargs)
                self.assertIn("at least 1", str(e.exception))


if __name__ == "__main__":
    unittest.main()
