"""The two trained models that ship in examples/models/: what the library
finds through the bindings agrees with what each card.json records
(expectations are read from the card, not written here)."""

import json
import os
import unittest

import mi
from reference import tolist

MODELS = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "models")


def load(name):
    with open(os.path.join(MODELS, name, "card.json")) as f:
        card = json.load(f)
    with open(os.path.join(MODELS, name, "reference_logits.json")) as f:
        reference = json.load(f)
    return mi.Model.load(os.path.join(MODELS, name, "model.safetensors")), card, reference


class ExampleModelTest(unittest.TestCase):
    def check_forward(self, model, reference):
        # The reference is torch in float64 on the same float32 weights; libmi
        # runs float32 products (rounding ~6e-8 relative per term, logits up to
        # ~15 over d_model <= 128 terms: ~1e-5 at worst; measured 5e-6, which
        # the file's own float32 forward also shows). 5e-5 absolute leaves room
        # for another BLIS kernel set; a wrong part of the model moves logits by 0.1+.
        for seq in reference["sequences"]:
            got = tolist(model.forward(seq["tokens"]))
            worst = max(abs(g - w) for gr, wr in zip(got, seq["logits"]) for g, w in zip(gr, wr))
            self.assertLess(worst, 5e-5)

    def test_induction_model(self):
        model, card, reference = load("induction-2l")
        found = card["found"]
        with model:
            self.assertEqual({k: model.config[k] for k in card["config"]}, card["config"])
            self.check_forward(model, reference)
            report = {(r.layer, r.head): r for r in model.head_report()}
            # The card's copying scores are rounded to 4 decimals; libmi's come
            # from float32 Grams (~1e-6): 1e-4 covers both.
            for layer, scores in enumerate(found["copying_score"]):
                for head, want in enumerate(scores):
                    self.assertAlmostEqual(report[layer, head].ov.copying_score, want, delta=1e-4)
            # Composition scores: 4 decimals in the card, float32 GEMMs in libmi.
            for kind in "QKV":
                scores = tolist(model.composition_scores(kind))
                for h0, row in enumerate(found[kind.lower() + "_composition"]):
                    for h1, want in enumerate(row):
                        self.assertAlmostEqual(scores[0][h0][1][h1], want, delta=1e-4)
            # Behaviour: the card measured <bos> + X + X, the report random X + X
            # without <bos>, so compare the heads found, not the numbers: a head
            # "is" one when most of its attention goes where the score says.
            prev = {(h["layer"], h["head"]) for h in found["previous_token_heads"]}
            self.assertEqual({k for k, r in report.items() if r.prev_token_attention > 0.5}, prev)
            layer0 = [report[0, h].prev_token_attention for h in range(4)]
            self.assertEqual([0, layer0.index(max(layer0))], found["strongest"]["previous_token_head"])
            induction = {(h["layer"], h["head"]) for h in found["induction_heads"]}
            self.assertEqual({k for k, r in report.items() if r.induction_attention > 0.5},
                             induction)
            k_scores = tolist(model.composition_scores("K"))
            mean, std, _ = model.composition_baseline()
            for head in found["induction_heads"]:
                column = [k_scores[0][h0][1][head["head"]] for h0 in range(4)]
                best = column.index(max(column))
                self.assertEqual(best, head["strongest_k_composition_layer0_head"])
                self.assertGreater(max(column), mean + 3 * std)  # well above chance
                self.assertGreater(report[1, head["head"]].ov.copying_score, 0)
            # The K-composition circuit of the previous-token head into an
            # induction head puts the diagonal first in most rows.
            l0, h0 = found["strongest"]["previous_token_head"]
            l1, h1 = found["strongest"]["induction_head"]
            with model.k_composition_circuit(l0, h0, l1, h1) as circuit:
                top1, _ = circuit.copying_accuracy()
                self.assertGreater(top1, 0.5)

    def test_skip_trigram_model(self):
        model, card, reference = load("skip-trigram-1l")
        found = card["found"]
        with model:
            self.check_forward(model, reference)
            report = model.head_report(behaviour_sequences=0)
            for line in found["heads"]:
                r = report[line["head"]]
                self.assertAlmostEqual(r.ov.copying_score, line["copying_score"], delta=1e-4)
            copying = {h["head"] for h in found["copying_heads"]}
            ranked = sorted(range(4), key=lambda h: -report[h].ov.copying_score)
            self.assertEqual(set(ranked[:len(copying)]), copying)
            # Ranks are 0-based counts of entries strictly larger; the card's
            # were computed in float64. A rank may move by one where two
            # entries lie within float32 rounding of each other.
            ov = [model.ov(0, h) for h in range(4)]
            qk = [model.qk(0, h, bias=True, scale=False) for h in range(4)]
            for trigram in found["skip_trigrams"]:
                src, dst, out = (model.token_id(trigram[k]) for k in ("src", "dst", "out"))
                want = trigram["fold_ln"]
                for h in range(4):
                    row = tolist(ov[h].rows(src))[0]
                    self.assertLessEqual(abs(sum(x > row[out] for x in row) - want["ov_rank"][h]), 1)
                    row = tolist(qk[h].rows(dst))[0]
                    rank = sum(x > row[src] for x in row)
                    self.assertLessEqual(abs(rank - want["qk_rank_with_bias"][h]), 1)
                # top-k agrees: the best head lists the planted output in its top 5
                if want["ov_rank"][want["best_head"]] < 5:
                    index, _ = ov[want["best_head"]].topk(5, start=src, stop=src + 1)
                    self.assertIn(out, tolist(index)[0])
            for c in ov + qk:
                c.close()


if __name__ == "__main__":
    unittest.main()
