"""Forward pass, attribution and behavioural scores through the bindings,
against a forward pass written here in double from model.weight().

Tolerance: libmi runs the products in float32 and the LayerNorm statistics
and softmax in double; with d_model = 6 and O(1) weights the logits (O(10))
agree with the double reference to about 1e-5, so 1e-4 relative to the
largest logit is a safe bound that a wrong mask, scale or bias still breaks."""

import math
import unittest

import mi
from reference import forward, random_model, tolist

TOL = 1e-4
TOKENS = [3, 0, 6, 3, 1]


class ForwardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = random_model(seed=11)
        cls.ref_logits, cls.ref_patterns, cls.ref_resid = forward(cls.model, TOKENS)
        cls.size = max(abs(x) for row in cls.ref_logits for x in row)

    @classmethod
    def tearDownClass(cls):
        cls.model.close()

    def assertNested(self, got, want, size):
        got, want = tolist(got), tolist(want)
        if isinstance(want, list):
            self.assertEqual(len(got), len(want))
            for g, w in zip(got, want):
                self.assertNested(g, w, size)
        else:
            self.assertLessEqual(abs(got - want), TOL * size, f"{got} vs {want}")

    def test_logits_patterns_resid(self):
        self.assertNested(self.model.forward(TOKENS), self.ref_logits, self.size)
        out = self.model.forward(TOKENS, patterns=True, resid=True)
        self.assertNested(out.logits, self.ref_logits, self.size)
        self.assertNested(out.patterns, self.ref_patterns, 1.0)
        self.assertNested(out.resid, self.ref_resid, self.size)
        only = self.model.forward(TOKENS, patterns=True)
        self.assertIsNone(only.resid)

    def test_errors(self):
        with self.assertRaisesRegex(IndexError, "7 out of range"):
            self.model.forward([0, 7])
        with self.assertRaises(mi.MiShapeError) as caught:
            self.model.forward(list(range(6)))  # n_ctx is 5
        self.assertEqual(caught.exception.status, -5)
        with self.assertRaises(IndexError):
            self.model.forward([0, -1])

    def test_attribution_sums_to_logits(self):
        parts = self.model.attribute(TOKENS, token=2, vs=5)
        sources = {p.source for p in parts}
        self.assertEqual(sources, {"embed", "value_bias", "out_bias", "unembed_bias"})
        self.assertEqual(parts[0].label, "direct")
        self.assertEqual(parts[-1].label, "b_U")
        self.assertIn("b_V L0H1->L1H0", [p.label for p in parts])
        self.assertIn("b_O[0]->L1H1", [p.label for p in parts])
        for t in range(len(TOKENS)):
            total = sum(tolist(p.token_logit)[t] for p in parts)
            diff = sum(tolist(p.logit_diff)[t] for p in parts)
            self.assertLessEqual(abs(total - self.ref_logits[t][2]), TOL * self.size)
            want = self.ref_logits[t][2] - self.ref_logits[t][5]
            self.assertLessEqual(abs(diff - want), TOL * self.size)

    def test_attribution_full_logits_positions_and_order(self):
        parts = self.model.attribute(TOKENS, positions=[4, 1], full_logits=True)
        for i, t in enumerate([4, 1]):
            for j in range(7):
                total = sum(tolist(p.logits)[i][j] for p in parts)
                self.assertLessEqual(abs(total - self.ref_logits[t][j]), TOL * self.size)
        self.assertEqual(parts[0].positions, [4, 1])
        short = self.model.attribute(TOKENS, token=[0, 1, 2, 3, 4], max_order=1)
        self.assertEqual(max(p.order for p in short), 1)
        self.assertEqual(sum(p.source == "embed" for p in short), 5)  # direct + 4 heads
        stopped = self.model.attribute(TOKENS, token=0, callback=lambda part: True)
        self.assertEqual(len(stopped), 1)
        with self.assertRaises(ZeroDivisionError):
            self.model.attribute(TOKENS, token=0, callback=lambda part: 1 / 0)
        with self.assertRaises(mi.MiError) as caught:  # asks for nothing
            self.model.attribute(TOKENS)
        self.assertEqual(caught.exception.status, -1)
        with self.assertRaises(ValueError):
            self.model.attribute(TOKENS, token=[1, 2])

    def test_behavioural_scores(self):
        seqs = self.model.repeated_tokens(3, 2, seed=5)
        rows = tolist(seqs)
        self.assertEqual(len(rows), 3)
        for row in rows:
            self.assertEqual(row[:2], row[2:])
        scores = tolist(self.model.attention_scores(seqs))
        prev = [[0.0, 0] for _ in range(4)]
        induction = [[0.0, 0] for _ in range(4)]
        for row in rows:
            _, patterns, _ = forward(self.model, row)
            for l in range(2):
                for h in range(2):
                    a = patterns[l][h]
                    for t in range(1, 4):
                        prev[l * 2 + h][0] += a[t][t - 1]
                        prev[l * 2 + h][1] += 1
                        keys = [s for s in range(1, t + 1) if row[s - 1] == row[t]]
                        if keys:
                            induction[l * 2 + h][0] += sum(a[t][s] for s in keys)
                            induction[l * 2 + h][1] += 1
        for l in range(2):
            for h in range(2):
                s, n = prev[l * 2 + h]
                self.assertAlmostEqual(scores[l][h][0], s / n, delta=TOL)
                s, n = induction[l * 2 + h]
                self.assertAlmostEqual(scores[l][h][2], s / n if n else math.nan, delta=TOL)

    def test_head_report_matches_the_single_head_calls(self):
        report = self.model.head_report(behaviour_sequences=4, behaviour_half_length=2)
        self.assertEqual([(r.layer, r.head) for r in report], [(0, 0), (0, 1), (1, 0), (1, 1)])
        seqs = self.model.repeated_tokens(4, 2, seed=1)
        scores = tolist(self.model.attention_scores(seqs))
        for r in report:
            with self.model.ov(r.layer, r.head) as ov, self.model.qk(r.layer, r.head) as qk, \
                    self.model.qk(r.layer, r.head, "pos", "pos") as pos:
                # float32 Gram products shared between heads: 1e-4 as above
                self.assertAlmostEqual(r.ov.copying_score, ov.copying_score(), delta=TOL)
                self.assertAlmostEqual(r.qk.copying_score, qk.copying_score(), delta=TOL)
                self.assertEqual(r.ov.nonzero, ov.eigen_summary().nonzero)
                self.assertAlmostEqual(r.prev_token_share, pos.prev_token_share())
            behaviour = [r.prev_token_attention, r.duplicate_token_attention,
                         r.induction_attention]
            for got, want in zip(behaviour, scores[r.layer][r.head]):
                if math.isnan(want):
                    self.assertTrue(math.isnan(got))
                else:
                    self.assertAlmostEqual(got, want, delta=1e-12)
        quiet = self.model.head_report(prev_token=False, behaviour_sequences=0)
        self.assertTrue(math.isnan(quiet[0].prev_token_share))
        self.assertTrue(math.isnan(quiet[0].induction_attention))


if __name__ == "__main__":
    unittest.main()
