"""Runs one C example on the shipped models and checks its output against
the models' card.json (what training planted, what float64 analysis of the
saved weights found). Nothing expected is written here.

usage: check_examples.py inspect|skip_trigrams|induction BINARY MODELS_DIR
"""
import json
import os
import re
import subprocess
import sys

# The card's scores are float64 on the saved float32 weights, rounded to 4
# digits; libmi computes from float32 products: 2e-3 covers both.
SCORE_TOL = 2e-3


def card(models, name):
    with open(os.path.join(models, name, "card.json")) as f:
        return json.load(f)


def run(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    print(r.stdout, end="")
    print(r.stderr, end="", file=sys.stderr)
    return r


def check(cond, message):
    if not cond:
        sys.exit(f"FAIL: {message}")


def inspect(binary, models):
    c = card(models, "skip-trigram-1l")
    # A destination where head 0 ranks some planted source in its top 5.
    found = [t for t in c["found"]["skip_trigrams"] if t["fold_ln"]["qk_rank_with_bias"][0] < 5]
    check(found, "the card lists no planted source in head 0's top 5")
    dst = found[0]["dst"]
    r = run(binary, os.path.join(models, "skip-trigram-1l", "model.safetensors"), dst)
    check(r.returncode == 0, f"exit status {r.returncode}")
    cfg = c["config"]
    check(f"{cfg['n_layers']} layers x {cfg['n_heads']} heads, d_model {cfg['d_model']}" in r.stdout,
          "the shape line")
    line = re.search(r"top 5 sources for destination (\S+): (.*)", r.stdout)
    check(line and line.group(1) == dst, "the top-k line")
    tops = re.findall(r"(\S+) \(", line.group(2))
    for t in found:
        if t["dst"] == dst:
            rank = t["fold_ln"]["qk_rank_with_bias"][0]
            check(tops[rank] == t["src"], f"{t['src']} at rank {rank} for {dst}: got {tops}")
    for h in c["found"]["heads"]:
        m = re.search(rf"L{h['layer']}H{h['head']} copying score (\S+)", r.stdout)
        check(m and abs(float(m.group(1)) - h["copying_score"]) < SCORE_TOL,
              f"copying score of L{h['layer']}H{h['head']}")


def skip_trigrams(binary, models):
    c = card(models, "skip-trigram-1l")
    args = [w for t in c["planted"]["skip_trigrams"] for w in (t["src"], t["dst"], t["out"])]
    r = run(binary, os.path.join(models, "skip-trigram-1l", "model.safetensors"), *args)
    check(r.returncode == 0, f"exit status {r.returncode}")
    want_found = 0
    for t in c["found"]["skip_trigrams"]:
        f = t["fold_ln"]
        m = re.search(rf"^{t['src']} \.\.\. {t['dst']} -> {t['out']}  QK ranks ([\d ]+)  "
                      rf"OV ranks ([\d ]+)  (.*)$", r.stdout, re.M)
        check(m, f"no line for {t['src']} ... {t['dst']} -> {t['out']}")
        qk = [int(x) for x in m.group(1).split()]
        ov = [int(x) for x in m.group(2).split()]
        # Ranks from float32 rows against the card's float64: a near-tie may
        # swap neighbours, so allow one place.
        check(all(abs(a - b) <= 1 for a, b in zip(qk, f["qk_rank_with_bias"])), f"QK ranks {qk}")
        check(all(abs(a - b) <= 1 for a, b in zip(ov, f["ov_rank"])), f"OV ranks {ov}")
        same = any(q < 5 and o < 5 for q, o in zip(f["qk_rank_with_bias"], f["ov_rank"]))
        want_found += same
        check(m.group(3).startswith("found") == same, f"verdict '{m.group(3)}'")
    check(want_found == c["found"]["counts_top5_best_head"]["same_head_top5_with_bias"]["fold_ln"],
          "the card's own count")
    check(f"found {want_found} of {len(c['planted']['skip_trigrams'])}" in r.stdout, "the summary")


def induction(binary, models):
    c = card(models, "induction-2l")
    r = run(binary, os.path.join(models, "induction-2l", "model.safetensors"))
    check(r.returncode == 0, f"exit status {r.returncode}: no induction circuit")
    prev = int(re.search(r"previous-token head: L0H(\d+)", r.stdout).group(1))
    check([0, prev] == c["found"]["strongest"]["previous_token_head"], f"previous-token head {prev}")
    ind = int(re.search(r"induction head: L1H(\d+)", r.stdout).group(1))
    row = c["found"]["k_composition"][prev]
    check(row[ind] >= max(row) - SCORE_TOL, f"L1H{ind} is not the strongest K-composition {row}")
    score = float(re.search(r"K-composition (\S+)", r.stdout).group(1))
    check(abs(score - row[ind]) < SCORE_TOL, f"K-composition {score} against {row[ind]}")
    copying = float(re.search(r"OV copying score ([-\d.]+)", r.stdout).group(1))
    check(abs(copying - c["found"]["copying_score"][1][ind]) < SCORE_TOL, "copying score")
    check(any(h["layer"] == 1 and h["head"] == ind for h in c["found"]["induction_heads"]),
          f"L1H{ind} is not an induction head of the card")


if __name__ == "__main__":
    {"inspect": inspect, "skip_trigrams": skip_trigrams, "induction": induction}[sys.argv[1]](
        sys.argv[2], sys.argv[3])
    print("OK")
