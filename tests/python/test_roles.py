"""Head roles (mi_model_head_roles), the skip-trigram floor, the HTML page and
the figures, through the bindings, against independent references: the
roles of each shipped model's card.json, copying accuracy recomputed densely
in double from the weights, the rule re-applied here to the evidence, and
the figures' own numbers against Model.attribute and the composition scores."""

import json
import math
import os
import unittest

import mi
import mi.html
from reference import tolist

MODELS = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "models")
KEYS = {"previous_token_heads": "previous-token", "induction_heads": "induction",
        "copying_heads": "copying"}


def load(name):
    with open(os.path.join(MODELS, name, "card.json")) as f:
        card = json.load(f)
    return mi.Model.load(os.path.join(MODELS, name, "model.safetensors")), card


def matmul(a, b):
    bt = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) for col in bt] for row in a]


class RolesTest(unittest.TestCase):
    def check_card(self, name):
        model, card = load(name)
        with model:
            roles, partners = model.head_roles()
            want = {(h["layer"], h["head"]): role for key, role in KEYS.items()
                    for h in card["found"].get(key, [])}
            for r in roles:
                self.assertEqual(r.role, want.get((r.layer, r.head), "none"), (r.layer, r.head))
            want_partners = sorted(((h["layer"], h["head"]), p["layer"], p["head"])
                                   for h in card["found"].get("induction_heads", [])
                                   for p in h["k_composition_with"])
            self.assertEqual(sorted((p.reader, p.layer, p.head) for p in partners),
                             want_partners)
            return model, roles

    def test_shipped_models_name_their_cards_roles(self):
        self.check_card("induction-2l")
        self.check_card("skip-trigram-1l")

    def test_rule_reapplied_to_the_evidence(self):
        # The documented rule, written again here with the default thresholds.
        for name in ("induction-2l", "skip-trigram-1l"):
            model, card = load(name)
            with model:
                roles, _ = model.head_roles()
            for r in roles:
                def attn(x, u):
                    return x >= 0.5 and x >= 3 * u
                passed = set()
                share_ok = math.isnan(r.prev_token_share) or \
                    r.prev_token_share >= 2 * r.prev_token_share_chance
                if attn(r.prev_token_attention, r.prev_token_uniform) and share_ok:
                    passed.add("previous-token")
                if attn(r.duplicate_token_attention, r.duplicate_token_uniform) and \
                        r.qk_same_token > 0:
                    passed.add("duplicate-token")
                if r.k_composition and attn(r.induction_attention, r.induction_uniform) and \
                        r.k_composition[3] >= 3:
                    passed.add("induction")
                if r.ov_copying_score >= 0.5 and r.ov_top1 >= 50 * r.ov_top1_chance:
                    passed.add("copying")
                self.assertEqual(r.passed, frozenset(passed))
                first = next((x for x in ("induction", "previous-token", "duplicate-token",
                                          "copying") if x in passed), "none")
                self.assertEqual(r.role, first)

    def test_top1_against_dense_double(self):
        # Top-1 copying accuracy from W_E W_V W_O W_U formed here in double
        # (ties are not an issue: float32 weights give distinct entries).
        model, _ = load("induction-2l")
        with model:
            roles, _ = model.head_roles()
            E, U = tolist(model.weight("W_E")), tolist(model.weight("W_U"))
            for r in roles[::3]:  # three heads keep the pure-Python product short
                V = tolist(model.weight("W_V", r.layer, r.head))
                O = tolist(model.weight("W_O", r.layer, r.head))
                M = matmul(matmul(E, matmul(V, O)), U)
                wins = sum(row[i] == max(row) for i, row in enumerate(M))
                self.assertAlmostEqual(r.ov_top1, wins / len(M), delta=1.5 / len(M))

    def test_search_gives_the_copying_accuracy(self):
        # The skip-trigram search's OV pass gives each head's copying
        # accuracy, exactly Circuit.copying_accuracy's (both count the same
        # float32 entries against the same threshold); the triples are those
        # of a search without it, and the roles given it are the roles.
        for name in ("induction-2l", "skip-trigram-1l"):
            model, _ = load(name)
            with model:
                c = model.config
                triples, accuracy = model.skip_trigrams(copying_accuracy=True)
                self.assertEqual(triples, model.skip_trigrams())
                self.assertEqual(len(accuracy), c["n_layers"] * c["n_heads"])
                for i, pair in enumerate(accuracy):
                    with model.ov(i // c["n_heads"], i % c["n_heads"]) as ov:
                        self.assertEqual(pair, ov.copying_accuracy(), (name, i))
                shared = model.head_roles(ov_top1=[a for a, _ in accuracy])
                self.assertEqual(shared, model.head_roles())
                with self.assertRaises(ValueError):
                    model.head_roles(ov_top1=[0.5])
                with self.assertRaises(mi.MiError):
                    model.head_roles(ov_top1=[2.0] * len(accuracy))
                with self.assertRaises(TypeError):  # not a threshold
                    model.head_roles(ov_top1_count=1)
                with self.assertRaises(ValueError):
                    model.skip_trigrams(0, copying_accuracy=True)

    def test_thresholds_are_used(self):
        # Lowering the copying lift to 20x chance makes the 2-layer model's
        # layer-0 heads (29-43x) copying heads: the option reaches the rule.
        model, _ = load("induction-2l")
        with model:
            roles, _ = model.head_roles(min_copying_lift=20)
            self.assertTrue(any(r.role == "copying" for r in roles))
            with self.assertRaises(TypeError):
                model.head_roles(no_such_threshold=1)
            with self.assertRaises(mi.MiError):
                model.head_roles(min_attention=float("nan"))

    def test_floor(self):
        model, card = load("skip-trigram-1l")
        with model:
            c = card["config"]
            self.assertAlmostEqual(model.skip_trigram_floor(),
                                   math.sqrt(2 * math.log(c["n_layers"] * c["n_heads"] *
                                                          c["d_vocab"] ** 2)), delta=1e-12)


class LabelTest(unittest.TestCase):
    def test_attribution_label(self):
        import ctypes
        from mi._native import lib
        buf = ctypes.create_string_buffer(64)
        cases = [(0, 0, [], "direct"), (0, 0, [(0, 3), (1, 0)], "L0H3 -> L1H0"),
                 (1, 0, [(0, 1)], "b_V via L0H1"), (2, 0, [(1, 2)], "b_O[0] -> L1H2"),
                 (3, 0, [], "b_U + ln_final.b")]
        for source, layer, heads, want in cases:
            ls = (ctypes.c_size_t * max(len(heads), 1))(*[l for l, _ in heads])
            hs = (ctypes.c_size_t * max(len(heads), 1))(*[h for _, h in heads])
            lib.mi_attribution_label(buf, 64, source, layer, len(heads), ls, hs)
            self.assertEqual(buf.value.decode(), want)
        ls, hs = (ctypes.c_size_t * 2)(0, 1), (ctypes.c_size_t * 2)(3, 0)
        lib.mi_attribution_label(buf, 6, 0, 0, 2, ls, hs)  # truncated, still terminated
        self.assertEqual(buf.value.decode(), "L0H3 ")
        with self.assertRaises(mi.MiError):
            lib.mi_attribution_label(buf, 0, 0, 0, 0, None, None)


class HtmlTest(unittest.TestCase):
    def test_page_holds_the_data(self):
        model, card = load("induction-2l")
        with model:
            tokens = [0, 5, 9, 12, 5, 9, 12]
            page = mi.html.report(model, prompt=tokens)
            words = " ".join(model.token_str(t) for t in tokens)
            self.assertEqual(mi.html.report(model, prompt=words).html, page.html)
        text = page.html
        start = text.index('id="mi-data">') + len('id="mi-data">')
        data = json.loads(text[start:text.index("</script>", start)])
        self.assertEqual(data["prompt"]["ids"], tokens)
        self.assertEqual(len(data["prompt"]["patterns"]), 8)
        self.assertEqual([h["role"] for h in data["heads"]].count("induction"),
                         len(card["found"]["induction_heads"]))
        self.assertIn("<iframe srcdoc=", page._repr_html_())
        # The page's head table is the same whether the search's OV pass
        # gives the copying accuracy (trigrams) or the roles compute it (none).
        model, _ = load("induction-2l")
        with model:
            def heads(trigrams):
                text = model.html_report(trigrams=trigrams)
                start = text.index('id="mi-data">') + len('id="mi-data">')
                return json.loads(text[start:text.index("</script>", start)])["heads"]
            self.assertEqual(heads(24), heads(0))
        with self.assertRaisesRegex(IndexError, "out of range"):  # checked in Python
            model2, _ = load("induction-2l")
            with model2:
                model2.html_report([10 ** 6])


class PlotTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        try:
            import matplotlib
            matplotlib.use("Agg")
        except ImportError:
            raise unittest.SkipTest("no matplotlib")
        import mi.plot  # noqa: F401

    def test_attribution_vs_sums_to_the_logit_difference(self):
        import mi.plot
        model, _ = load("skip-trigram-1l")
        with model:
            words = ["<bos>", "keep", "the", "old", "names", "of", "a", "in"]
            tokens = [model.token_id(w) for w in words]
            a, b = model.token_id("mind"), model.token_id("place")
            fig = mi.plot.attribution_bars(model, tokens, token=a, vs=b, top=100)
            logits = tolist(model.forward(tokens))[-1]
            bars = [p.get_width() for p in fig.axes[0].patches]
            self.assertAlmostEqual(sum(bars), logits[a] - logits[b], delta=1e-3)
            title = fig.axes[0].get_title()
            self.assertIn("keep the old names of a in", title)
            self.assertIn(f"{logits[a] - logits[b]:.2f}", title)
            colours = {tuple(p.get_facecolor()) for p in fig.axes[0].patches}
            self.assertGreaterEqual(len(colours), 3)  # direct, head, bias

    def test_eigen_titles_and_composition_values(self):
        import mi.plot
        model, _ = load("induction-2l")
        with model:
            fig = mi.plot.ov_eigenvalues(model)
            with model.ov(1, 0) as c:
                share = c.eigen_summary().positive_real_fraction
                top1 = c.copying_accuracy()[0]
            title = fig.axes[4].get_title()
            self.assertIn(f"+real {share:.2f}", title)
            self.assertIn(f"top-1 {top1:.2f}", title)
            fig = mi.plot.composition_heatmaps(model)
            k = tolist(model.composition_scores("K"))
            texts = [t.get_text() for t in fig.axes[1].texts]
            self.assertEqual(texts, [f"{k[0][i][1][j]:.2f}" for i in range(4) for j in range(4)])
            fig = mi.plot.attention_patterns(model, [0, 5, 9, 5, 9], heads=[(1, 0), (0, 3)])
            self.assertEqual([a.get_title() for a in fig.axes[:2]], ["L1H0", "L0H3"])


if __name__ == "__main__":
    unittest.main()
