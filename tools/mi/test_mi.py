"""Tests of the `mi` command on the shipped models, against their card.json.

usage: test_mi.py MI_BINARY MODELS_DIR

Expectations come from each model's card (what training planted and what
float64 analysis of the saved weights found), never from numbers written here.
"""
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "python"))
from helpers import write_safetensors, z_rows  # noqa: E402

MI = sys.argv[1] if len(sys.argv) > 1 else "mi"
MODELS = sys.argv[2] if len(sys.argv) > 2 else "examples/models"
SKIP = os.path.join(MODELS, "skip-trigram-1l")
IND = os.path.join(MODELS, "induction-2l")
COMMANDS = ["report", "topk", "paths", "compose", "attribute"]


def card(model_dir):
    with open(os.path.join(model_dir, "card.json")) as f:
        return json.load(f)


def run(*args):
    return subprocess.run([MI, *args], capture_output=True, text=True, timeout=120)


def run_json(*args):
    r = run(*args, "--json")
    if r.returncode != 0:
        raise AssertionError(f"mi {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def triples(report):
    return {(t["src_token"], t["dst_token"], t["out_token"])
            for t in report["skip_trigrams"]["triples"]}


def strong_planted(c):
    """Planted trigrams that one head carries clearly: rank <= 1 (0-based) of
    the source in the destination's QK row (with biases) and of the output in
    the source's OV row, in the same head, as the card measured them."""
    out = set()
    for t in c["found"]["skip_trigrams"]:
        f = t["fold_ln"]
        if any(q <= 1 and o <= 1 for q, o in zip(f["qk_rank_with_bias"], f["ov_rank"])):
            out.add((t["src"], t["dst"], t["out"]))
    return out


class Report(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.card = card(SKIP)
        cls.text = run("report")
        cls.json = run_json("report")

    def test_default_model_is_the_shipped_one(self):
        self.assertEqual(self.text.returncode, 0, self.text.stderr)
        self.assertEqual(os.path.realpath(self.json["model"]["path"]),
                         os.path.realpath(os.path.join(SKIP, "model.safetensors")))
        self.assertTrue(self.json["model"]["vocab"].endswith("vocab.txt"))
        self.assertEqual(self.json["model"]["d_vocab"], self.card["config"]["d_vocab"])

    def test_json_keys(self):
        self.assertEqual(set(self.json),
                         {"model", "behaviour", "heads", "roles", "skip_trigrams", "threads"})
        cfg = self.card["config"]
        self.assertEqual(len(self.json["heads"]), cfg["n_layers"] * cfg["n_heads"])
        for h in self.json["heads"]:
            self.assertLessEqual({"layer", "head", "role", "ov_copying_score", "ov_top1",
                                  "qk_same_token_score", "prev_token_share",
                                  "prev_token_attention", "duplicate_token_attention",
                                  "induction_attention", "k_composition"}, set(h))
        self.assertTrue(self.json["skip_trigrams"]["qk_bias"])
        for t in self.json["skip_trigrams"]["triples"]:
            self.assertLessEqual(t["score"], min(t["qk_z"], t["ov_z"]) + 1e-12)

    def test_copying_scores_match_the_card(self):
        # The card's scores are float64 eigenvalues of the fold_ln weights,
        # rounded to 4 digits; libmi's come from float32 Grams: 2e-3 covers both.
        for want in self.card["found"]["heads"]:
            got = next(h for h in self.json["heads"]
                       if (h["layer"], h["head"]) == (want["layer"], want["head"]))
            self.assertAlmostEqual(got["ov_copying_score"], want["copying_score"], delta=2e-3)

    def test_planted_skip_trigrams_appear(self):
        strong = strong_planted(self.card)
        found = strong & triples(self.json)
        # Measured 13 of the 14 strong ones in the default table of 24.
        self.assertGreaterEqual(len(found), 0.75 * len(strong), sorted(strong - found))
        for src, dst, out in found:
            self.assertIn(f"{src} ... {dst} -> {out}", self.text.stdout)
        self.assertIn("with biases", self.text.stdout)

    def test_biases_help(self):
        # The finding: reading QK with b_Q and b_K recovers more
        # planted trigrams than without (measured 13 against 7 of 16).
        planted = {(t["src"], t["dst"], t["out"]) for t in self.card["planted"]["skip_trigrams"]}
        with_bias = len(planted & triples(self.json))
        without = len(planted & triples(run_json("report", "--no-qk-bias")))
        self.assertGreater(with_bias, without)


ROLE_LISTS = {"previous_token_heads": "previous-token", "induction_heads": "induction",
              "copying_heads": "copying"}


def card_roles(c):
    """Each head the card names, by role: {(layer, head): role}."""
    return {(h["layer"], h["head"]): role for key, role in ROLE_LISTS.items()
            for h in c["found"].get(key, [])}


def role_lines(text):
    """The heads listed under each role in the text report: {role: [(l, h)]}."""
    out = {}
    section = text.split("head roles")[1].split("thresholds:")[0]
    for block in re.split(r"\n  (?=[a-z-]+ heads:)", section):
        m = re.match(r"\s*([a-z-]+) heads:(.*)", block, re.S)
        if m:
            out[m.group(1)] = [(int(l), int(h)) for l, h in
                               re.findall(r"^\s+L(\d+)H(\d+) \(", m.group(2), re.M)]
    return out


class Roles(unittest.TestCase):
    """On each shipped model the role lists name exactly the heads its card
    names (by role), and every other head is "none"."""

    def check(self, model_dir):
        c = card(model_dir)
        want = card_roles(c)
        path = os.path.join(model_dir, "model.safetensors")
        got = run_json("report", path, "--trigrams", "0")
        heads = {(h["layer"], h["head"]): h["role"] for h in got["heads"]}
        self.assertEqual(len(heads), c["config"]["n_layers"] * c["config"]["n_heads"])
        for head, role in heads.items():
            self.assertEqual(role, want.get(head, "none"), f"L{head[0]}H{head[1]}")
        text = run("report", path, "--trigrams", "0").stdout
        lists = role_lines(text)
        for role in ["previous-token", "duplicate-token", "induction", "copying"]:
            self.assertEqual(sorted(lists[role]),
                             sorted(h for h, r in want.items() if r == role), role)
        return c, got, text

    def test_shared_copying_accuracy_changes_no_role(self):
        # With the search on, the roles take each head's copying accuracy
        # from its OV pass; with --trigrams 0 they compute it themselves.
        # The heads, the roles and the printed table must not change.
        for model_dir in (IND, SKIP):
            path = os.path.join(model_dir, "model.safetensors")
            shared, alone = run_json("report", path), run_json("report", path, "--trigrams", "0")
            self.assertEqual(shared["heads"], alone["heads"])
            self.assertEqual(shared["roles"], alone["roles"])
            text = run("report", path).stdout
            self.assertIn("\nskip-trigrams", text)
            self.assertEqual(text[:text.index("\nskip-trigrams")].rstrip("\n"),
                             run("report", path, "--trigrams", "0").stdout.rstrip("\n"))

    def test_induction_model(self):
        c, got, text = self.check(IND)
        # Each induction head lists the card's K-composition partners, with
        # the card's scores (float64 there, float32 GEMMs here: 2e-3).
        for want in c["found"]["induction_heads"]:
            entry = next(e for e in got["roles"]["induction"]
                         if (e["layer"], e["head"]) == (want["layer"], want["head"]))
            self.assertEqual([(p["layer"], p["head"]) for p in entry["k_composition_with"]],
                             [(p["layer"], p["head"]) for p in want["k_composition_with"]])
            for p, q in zip(entry["k_composition_with"], want["k_composition_with"]):
                self.assertAlmostEqual(p["score"], q["score"], delta=2e-3)
            line = re.search(rf"L{want['layer']}H{want['head']} \(induction[^\n]*", text).group(0)
            for p in want["k_composition_with"]:
                self.assertIn(f"K-composition with L{p['layer']}H{p['head']} ", line)

    def test_skip_trigram_model(self):
        self.check(SKIP)

    def test_uniform_baseline_is_uniform_attention(self):
        # The chance levels in brackets: uniform causal attention on the
        # report's own sequences (16 x 2 x 16 tokens, seed 1), recomputed here
        # from the sequences alone. The library's generator is splitmix64; the
        # previous-token level does not depend on the tokens: mean over
        # t = 1..31 of 1/(t+1).
        got = run_json("report", IND, "--trigrams", "0")["heads"][0]
        n = 2 * min(32, card(IND)["config"]["n_ctx"] // 2)  # the report's default half
        self.assertAlmostEqual(got["prev_token_uniform"],
                               sum(1 / (t + 1) for t in range(1, n)) / (n - 1), delta=1e-12)
        self.assertAlmostEqual(got["prev_token_share_chance"],
                               sum(1 / (p + 1) for p in range(1, 32)) / 31, delta=1e-12)
        self.assertAlmostEqual(got["ov_top1_chance"], 1 / card(IND)["config"]["d_vocab"],
                               delta=1e-15)


class Layout(unittest.TestCase):
    def test_headers_sit_over_their_columns(self):
        self.check_columns(run("report", IND, "--trigrams", "0").stdout, 8)

    def test_columns_hold_two_digit_layers_and_heads(self):
        # "L10H10" is wider than the shipped models' labels.
        L, H, V, D, dh, ctx = 11, 11, 12, 8, 2, 4
        rng = random.Random(3)
        tensors = {"embed.W_E": ([V, D], randoms(rng, V, D)),
                   "unembed.W_U": ([D, V], randoms(rng, D, V))}
        for layer in range(L):
            for w, shape in (("W_Q", [H, D, dh]), ("W_K", [H, D, dh]), ("W_V", [H, D, dh]),
                             ("W_O", [H, dh, D])):
                tensors[f"blocks.{layer}.attn.{w}"] = (shape, randoms(rng, *shape))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "wide.safetensors")
            write_safetensors(path, tensors, {"n_ctx": str(ctx)})
            self.check_columns(run("report", path, "--trigrams", "0").stdout, L * H)

    def check_columns(self, stdout, heads):
        # Two header lines, then one line a head: every header word ends in
        # the column where its values end (all right-aligned), or, for the
        # left-aligned head and role columns, starts where they start.
        text = stdout.splitlines()
        start = next(i for i, l in enumerate(text) if l.startswith("head "))
        top, bottom = text[start - 1], text[start]
        rows = [l for l in text[start + 1:] if re.match(r"L\d+H\d+ ", l)]
        self.assertEqual(len(rows), heads)

        def spans(line):
            return [(m.start(), m.end()) for m in re.finditer(r"\S+(?: \S+)*", line)]
        value_spans = [spans(r) for r in rows]
        for header in (top, bottom):
            for a, b in spans(header):
                if header[a:b] in ("head", "role"):  # left-aligned
                    self.assertTrue(all(any(s == a for s, _ in v) for v in value_spans),
                                    (header[a:b], a))
                else:
                    self.assertTrue(all(any(e == b for _, e in v) for v in value_spans),
                                    (header[a:b], b, rows[0]))

    def test_each_report_says_what_was_loaded(self):
        text = run("report", IND, "--trigrams", "0").stdout
        self.assertIn("processing: LayerNorm folded", text)
        self.assertIn("behaviour: attention on 16 random sequences of 2 x 16 tokens", text)


class NoiseFloor(unittest.TestCase):
    def test_floor_is_sqrt_2_ln_entries(self):
        for d in (IND, SKIP):
            c = card(d)["config"]
            got = run_json("report", os.path.join(d, "model.safetensors"))["skip_trigrams"]
            n = c["n_layers"] * c["n_heads"] * c["d_vocab"] ** 2
            self.assertAlmostEqual(got["noise_floor"], math.sqrt(2 * math.log(n)), delta=1e-12)
            for t in got["triples"]:
                self.assertEqual(t["above_floor"], t["score"] >= got["noise_floor"])

    def test_induction_model_has_no_skip_trigrams_above_it(self):
        # Its data has no skip-trigrams (the card plants repeats only): the
        # text says nothing passes instead of printing 24 noise triples.
        text = run("report", os.path.join(IND, "model.safetensors")).stdout
        self.assertIn("none reaches it", text)
        self.assertNotIn(" -> ", text.split("noise floor")[1])

    def test_random_model_stays_under_it(self):
        # A model of random weights with the skip-trigram model's shape has
        # nothing to find: its best triple must stay below the floor.
        c = card(SKIP)["config"]
        V, D, H, dh, ctx = c["d_vocab"], c["d_model"], c["n_heads"], c["d_head"], c["n_ctx"]
        rng = random.Random(5)
        tensors = {"embed.W_E": ([V, D], randoms(rng, V, D)),
                   "pos_embed.W_pos": ([ctx, D], randoms(rng, ctx, D)),
                   "unembed.W_U": ([D, V], randoms(rng, D, V))}
        for w, shape in (("W_Q", [H, D, dh]), ("W_K", [H, D, dh]), ("W_V", [H, D, dh]),
                         ("W_O", [H, dh, D])):
            tensors[f"blocks.0.attn.{w}"] = (shape, randoms(rng, *shape))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "random.safetensors")
            write_safetensors(path, tensors)
            got = run_json("report", path)["skip_trigrams"]
            self.assertTrue(got["triples"])
            self.assertLess(got["triples"][0]["score"], got["noise_floor"])


def dense_from_topk(circuit, head, n, *extra):
    """A head's whole circuit, read back from `mi topk -k n` of every row."""
    r = run_json("topk", "--circuit", circuit, "--layer", "0", "--head", str(head),
                 "-k", str(n), *extra)
    rows = [[0.0] * n for _ in range(n)]
    for line in r["lines"]:
        for e in line["top"]:
            rows[line["line"]][e["index"]] = e["value"]
    return rows


class SkipTrigramTable(unittest.TestCase):
    def test_table_is_the_search_redone_from_the_circuits(self):
        # The skip-trigram search redone in Python from every head's circuits
        # as `mi topk` streams them: each source's 2 best outputs other than
        # itself (OV row) and the 2 other destinations ranking it highest (QK
        # column), scored min(z_QK, z_OV), the best 24 (ties: earlier first).
        c = card(SKIP)["config"]
        n = c["d_vocab"]
        ovs = [z_rows(dense_from_topk("ov", h, n)) for h in range(c["n_heads"])]
        for extra in [(), ("--no-qk-bias",)]:
            cands = []
            for h, ov in enumerate(ovs):
                qk = z_rows(dense_from_topk("qk", h, n, *extra))
                for src in range(n):
                    outs = sorted((o for o in range(n) if o != src),
                                  key=lambda o: (-ov[src][o], o))[:2]
                    dsts = sorted((d for d in range(n) if d != src and qk[d] is not None),
                                  key=lambda d: (-qk[d][src], d))[:2]
                    for o in outs:
                        for d in dsts:
                            cands.append((min(qk[d][src], ov[src][o]), len(cands),
                                          (0, h, src, d, o)))
            cands.sort(key=lambda t: (-t[0], t[1]))
            got = run_json("report", *extra)["skip_trigrams"]["triples"]
            self.assertEqual([(t["layer"], t["head"], t["src"], t["dst"], t["out"]) for t in got],
                             [t[2] for t in cands[:24]])
            # The reference reads float32 entries; the report's z-scores come
            # from the factors in double (closed-form row statistics): they
            # differ by the entries' float32 rounding, about 1e-7 relative
            # here (tests/python/test_trigrams.py says more): 1e-5 relative.
            for t, want in zip(got, cands):
                self.assertAlmostEqual(t["score"], want[0], delta=1e-5 * max(1, abs(want[0])))


class Subcommands(unittest.TestCase):
    def test_topk_finds_the_planted_source(self):
        c = card(SKIP)
        t = c["found"]["skip_trigrams"][0]
        head = t["fold_ln"]["best_head"]
        rank = t["fold_ln"]["qk_rank_with_bias"][head]
        r = run_json("topk", "--circuit", "qk", "--layer", "0", "--head", str(head),
                     "--token", t["dst"], "-k", str(rank + 1))
        tops = [e["token"] for e in r["lines"][0]["top"]]
        self.assertEqual(tops[rank], t["src"])
        self.assertEqual(r["lines"][0]["token"], t["dst"])
        values = [e["value"] for e in r["lines"][0]["top"]]
        self.assertEqual(values, sorted(values, reverse=True))

    def test_paths_ranked(self):
        r = run_json("paths", os.path.join(IND, "model.safetensors"), "--top", "100")
        norms = [p["norm"] for p in r["paths"]]
        self.assertEqual(norms, sorted(norms, reverse=True))
        heads = card(IND)["config"]["n_heads"]
        self.assertEqual(r["path_count"], (1 + heads) ** 2)
        self.assertEqual(len(r["paths"]), r["path_count"])

    def test_compose_finds_the_induction_circuit(self):
        c = card(IND)
        r = run_json("compose", os.path.join(IND, "model.safetensors"), "--kind", "K")
        best = r["kinds"]["K"]["pairs"][0]
        prev = c["found"]["strongest"]["previous_token_head"]
        self.assertEqual([best["layer1"], best["head1"]], prev)
        self.assertAlmostEqual(r["baseline"]["mean"], c["found"]["composition_baseline_permuted"],
                               delta=0.01)
        for pair in r["kinds"]["K"]["pairs"]:
            want = c["found"]["k_composition"][pair["head1"]][pair["head2"]]
            self.assertAlmostEqual(pair["score"], want, delta=2e-3)

    def test_attribute_parts_sum_to_the_logit(self):
        c = card(SKIP)
        t = c["planted"]["skip_trigrams"][0]
        text = f"{t['src']} {t['dst']}"
        r = run_json("attribute", text, "--token", t["out"])
        # float32 forward against parts summed in double: 1e-3 of the logit.
        self.assertAlmostEqual(r["sum_of_parts"], r["logit"], delta=1e-3 * max(1, abs(r["logit"])))
        self.assertEqual(r["token"]["token"], t["out"])
        self.assertEqual([x["token"] for x in r["tokens"]], text.split())
        names = {p["name"] for p in r["parts"]}
        self.assertIn("direct", names)
        r2 = run_json("attribute", "--ids", ",".join(str(x["id"]) for x in r["tokens"]),
                      "--token", t["out"])
        self.assertAlmostEqual(r2["logit"], r["logit"], places=5)


class ByteLevelTokens(unittest.TestCase):
    def test_json_keeps_tokens_that_are_not_utf8(self):
        # A GPT-2 byte-level token can decode to part of a UTF-8 character
        # ("\u00e2" is the byte 0xE2), which a JSON string cannot hold: the
        # line must still be there, its token written with a \\x escape.
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(SKIP, "model.safetensors"), tmp)
            vocab = {f"t{i}": i for i in range(card(SKIP)["config"]["d_vocab"])}
            del vocab["t5"]
            vocab["\u00e2"] = 5
            with open(os.path.join(tmp, "vocab.json"), "w") as f:
                json.dump(vocab, f)
            out = run_json("topk", os.path.join(tmp, "model.safetensors"),
                           "--circuit", "direct", "--token", "5", "-k", "2")
            self.assertEqual(len(out["lines"]), 1)
            self.assertEqual(out["lines"][0]["token"], "\\xe2")


def randoms(rng, *shape):
    return [rng.uniform(-1, 1) for _ in range(math.prod(shape))]


V, D, CTX = 7, 8, 4


def gpt2_tensors():
    """A 1-layer GPT-2-named checkpoint, d_model 8, with no n_head anywhere."""
    rng = random.Random(3)
    ones = [1.0] * D
    return {"wte.weight": ([V, D], randoms(rng, V, D)),
            "wpe.weight": ([CTX, D], randoms(rng, CTX, D)),
            "h.0.ln_1.weight": ([D], ones), "h.0.ln_1.bias": ([D], [0.0] * D),
            "h.0.attn.c_attn.weight": ([D, 3 * D], randoms(rng, D, 3 * D)),
            "h.0.attn.c_attn.bias": ([3 * D], randoms(rng, 3 * D)),
            "h.0.attn.c_proj.weight": ([D, D], randoms(rng, D, D)),
            "h.0.attn.c_proj.bias": ([D], randoms(rng, D)),
            "ln_f.weight": ([D], ones), "ln_f.bias": ([D], [0.0] * D)}


def tl_tensors_without_layer_norm():
    """A 1-layer TransformerLens state dict, 2 heads, no LayerNorm at all."""
    rng = random.Random(4)
    H, dh = 2, 4
    return {"embed.W_E": ([V, D], randoms(rng, V, D)),
            "pos_embed.W_pos": ([CTX, D], randoms(rng, CTX, D)),
            "blocks.0.attn.W_Q": ([H, D, dh], randoms(rng, H, D, dh)),
            "blocks.0.attn.W_K": ([H, D, dh], randoms(rng, H, D, dh)),
            "blocks.0.attn.W_V": ([H, D, dh], randoms(rng, H, D, dh)),
            "blocks.0.attn.W_O": ([H, dh, D], randoms(rng, H, dh, D)),
            "unembed.W_U": ([D, V], randoms(rng, D, V))}


class WhatWasLoaded(unittest.TestCase):
    """Every report says what it loaded and how the weights were processed."""

    def test_shipped_model(self):
        m = run_json("paths")["model"]
        self.assertEqual(m["layout"], "TransformerLens")
        self.assertEqual(m["positional"], "standard")
        self.assertEqual(m["layer_norm"], {"ln1": True, "ln_final": True})
        self.assertEqual(m["processing"], "LayerNorm folded")
        self.assertTrue(m["ln_folded"])
        text = run("paths").stdout
        self.assertIn("TransformerLens layout, standard positional embedding, "
                      "LayerNorm (ln1, ln_final)", text)
        self.assertIn("processing: LayerNorm folded", text)

    def test_a_model_without_layer_norm_is_not_said_to_be_folded(self):
        # The old line said "LayerNorm folded in" for a model that has none.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "noln.safetensors")
            write_safetensors(path, tl_tensors_without_layer_norm())
            m = run_json("paths", path)["model"]
            self.assertEqual(m["layer_norm"], {"ln1": False, "ln_final": False})
            self.assertEqual(m["processing"], "none")
            self.assertFalse(m["ln_folded"])
            text = run("paths", path).stdout
            self.assertIn("no LayerNorm", text)
            self.assertIn("processing: none", text)
            self.assertNotIn("folded", text)


class ModelOptions(unittest.TestCase):
    """--process, --n-heads and --positional reach mi_load_options."""

    def attribute(self, *args):
        c = card(SKIP)
        t = c["planted"]["skip_trigrams"][0]
        return run_json("attribute", f"{t['src']} {t['dst']}", "--token", t["out"], *args)

    def test_process_none_and_fold_compute_the_same_function(self):
        fold, none = self.attribute("--process", "fold"), self.attribute("--process", "none")
        self.assertEqual(fold["model"]["processing"], "LayerNorm folded")
        self.assertEqual(none["model"]["processing"], "none")
        self.assertFalse(none["model"]["ln_folded"])
        # Folding changes only the float32 rounding of the products: 1e-4 of
        # the logit (the logits here are about 10).
        self.assertAlmostEqual(fold["logit"], none["logit"],
                               delta=1e-4 * max(1, abs(fold["logit"])))
        self.assertEqual(self.attribute()["logit"], fold["logit"])  # fold is the default

    def test_process_tl_keeps_logit_differences(self):
        # TransformerLens's processing centres the unembedding: each logit
        # moves by its position's mean, and differences stay.
        c = card(SKIP)
        vs = c["planted"]["skip_trigrams"][1]["out"]
        fold = self.attribute("--vs", vs)
        tl = self.attribute("--vs", vs, "--process", "tl")
        self.assertEqual(tl["model"]["processing"], "TransformerLens processing")
        self.assertAlmostEqual(fold["logit"], tl["logit"], delta=1e-4 * max(1, abs(fold["logit"])))
        self.assertNotAlmostEqual(self.attribute("--process", "tl")["logit"],
                                  self.attribute()["logit"], delta=1e-3)

    def test_bad_process_and_positional_are_usage_errors(self):
        for args in [("--process", "fold_ln"), ("--positional", "rotary"), ("--n-heads", "0"),
                     ("--n-heads", "x")]:
            r = run("paths", *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(args[0], r.stderr)

    def test_n_heads_for_a_gpt2_checkpoint(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "gpt2.safetensors")
            write_safetensors(path, gpt2_tensors())
            r = run("paths", path)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("--n-heads", r.stderr)
            r = run("paths", path, "--n-heads", "3")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("does not divide d_model 8", r.stderr)
            m = run_json("paths", path, "--n-heads", "2")["model"]
            self.assertEqual((m["layout"], m["n_heads"], m["d_head"]), ("GPT-2", 2, 4))
            m4 = run_json("paths", path, "--n-heads", "4")["model"]
            self.assertEqual((m4["n_heads"], m4["d_head"]), (4, 2))

    def test_n_heads_must_agree_with_a_transformerlens_file(self):
        heads = card(SKIP)["config"]["n_heads"]
        self.assertEqual(run_json("paths", "--n-heads", str(heads))["model"]["n_heads"], heads)
        r = run("paths", "--n-heads", str(heads + 1))
        self.assertEqual(r.returncode, 1)
        self.assertIn("n_heads", r.stderr)

    def test_positional(self):
        self.assertEqual(run_json("paths", "--positional", "standard")["model"]["positional"],
                         "standard")
        # The shipped file's metadata says standard: another kind is refused,
        # naming both sources.
        for kind in ["none", "shortformer"]:
            r = run("paths", "--positional", kind)
            self.assertEqual(r.returncode, 1)
            self.assertIn("positional_embedding_type = standard", r.stderr)
            self.assertIn(f"says {kind}", r.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "plain.safetensors")
            write_safetensors(path, tl_tensors_without_layer_norm())
            self.assertEqual(run_json("paths", path)["model"]["positional"], "standard")
            # A file that does not say takes the option.
            r = run("paths", path, "--positional", "shortformer", "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["model"]["positional"], "shortformer")


class Threads(unittest.TestCase):
    def test_default_is_every_online_core(self):
        self.assertEqual(run_json("paths")["threads"], os.sysconf("SC_NPROCESSORS_ONLN"))
        self.assertEqual(run_json("paths", "--threads", "3")["threads"], 3)

    def test_report_uses_every_online_core(self):
        self.assertEqual(run_json("report", "--trigrams", "0")["threads"],
                         os.sysconf("SC_NPROCESSORS_ONLN"))

    def test_threads_do_not_change_the_report(self):
        one, three = run_json("report", "--threads", "1"), run_json("report", "--threads", "3")
        one.pop("threads")
        three.pop("threads")
        self.assertEqual(one, three)


class CommandLine(unittest.TestCase):
    def test_every_option_in_the_help_is_parsed(self):
        # Usage is printed from the parser's spec: each option it lists must
        # be accepted (a value option takes the next word), so the parser
        # reaches the unknown one after it.
        for cmd in COMMANDS:
            text = run(cmd, "--help").stdout
            options = re.findall(r"^  (-{1,2}[a-z][a-z-]*)( \S+)?", text, re.M)
            self.assertGreater(len(options), 6, cmd)
            for name, value in options:
                args = [name, "x"] if value else [name]
                if name in ("--help", "-h"):
                    continue
                r = run(cmd, *args, "--not-an-option")
                self.assertIn("unknown option '--not-an-option'", r.stderr, (cmd, name))
                self.assertEqual(r.returncode, 2)
            for common in ["--json", "--threads", "--no-fast-kernels", "--n-heads", "--process",
                           "--positional"]:
                self.assertIn(common, [n for n, _ in options], cmd)

    def test_help(self):
        for cmd in COMMANDS:
            r = run(cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertTrue(r.stdout.startswith(f"usage: mi {cmd}"), cmd)
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for cmd in COMMANDS:
            self.assertIn(cmd, r.stdout)

    def test_bad_flag_is_a_usage_error(self):
        for cmd in COMMANDS:
            r = run(cmd, "--no-such-flag")
            self.assertEqual(r.returncode, 2, cmd)
            self.assertIn("unknown option '--no-such-flag'", r.stderr)
        self.assertEqual(run("no-such-command").returncode, 2)
        self.assertEqual(run().returncode, 2)
        r = run("topk", "--circuit", "xy")
        self.assertEqual(r.returncode, 2)
        self.assertIn("qk, ov or direct", r.stderr)
        r = run("topk", "--circuit", "qk", "--layer", "0", "--head", "99")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--head 99", r.stderr)
        r = run("attribute", "no-such-word")
        self.assertEqual(r.returncode, 2)
        self.assertIn("'no-such-word'", r.stderr)
        r = run("report", "--threads", "many")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--threads", r.stderr)
        # strchr finds the terminator of "QKV" (' ' & ~0x20 is '\0'), and
        # strtoull skips spaces and negates: both are usage errors here.
        for args, name in [(("compose", "--kind", " "), "--kind"),
                           (("compose", "--kind", ""), "--kind"),
                           (("paths", "--top", " -1"), "--top"),
                           (("topk", "--circuit", "ov", "--layer", " -1", "--head", "0"),
                            "--layer")]:
            r = run(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(name, r.stderr)

    def test_bad_model_is_a_library_error(self):
        for cmd in ["report", "paths", "compose"]:
            r = run(cmd, "/nonexistent/model.safetensors")
            self.assertEqual(r.returncode, 1, cmd)
            self.assertIn("cannot load model '/nonexistent/model.safetensors'", r.stderr)
            self.assertIn("No such file", r.stderr)  # libmi's own message follows
            self.assertEqual(r.stdout, "")
        # Not a safetensors file: the card is JSON, but not a model.
        r = run("report", os.path.join(SKIP, "card.json"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot load model", r.stderr)

    def test_no_progress_bar_when_stderr_is_not_a_terminal(self):
        r = run("report")
        self.assertEqual(r.stderr, "")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=1)
