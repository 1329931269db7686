#!/usr/bin/env python3
"""Draws the mi.plot figures for the two shipped models into a folder:

    PYTHONPATH=bindings/python MI_LIBRARY=build/lib/libmi.so.0 \
        python3 examples/plots.py out/ [--pdf]

writes out/<model>_ov_eigenvalues.png, out/<model>_composition.png (2-layer
model only: a 1-layer model has no composition), out/<model>_attribution.png
(the 1-layer model's also as a logit difference, _attribution_vs.png) and
out/<model>_attention.png, at 200 dpi; with --pdf each also as a PDF. Needs
matplotlib (Debian: python3-matplotlib)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

import mi
import mi.plot

DPI = 200

# An input for the attribution and attention charts: a repeated span, so that
# the 2-layer model's induction heads predict the next token of the repeat.
INPUTS = {
    "induction-2l": ["<bos>", "ka", "mo", "zu", "pe", "ri", "go", "ka", "mo", "zu", "pe"],
    "skip-trigram-1l": ["<bos>", "keep", "the", "old", "names", "of", "a", "in"],
}
# A logit difference for the 1-layer model: "keep ... in -> mind" against "put ... in -> place".
VERSUS = {"skip-trigram-1l": ("mind", "place")}


def save(fig, path, pdf):
    fig.savefig(path, dpi=DPI)
    print(path)
    if pdf:
        fig.savefig(os.path.splitext(path)[0] + ".pdf")
        print(os.path.splitext(path)[0] + ".pdf")
    plt.close(fig)


def main(folder, pdf=False):
    os.makedirs(folder, exist_ok=True)
    for name in ("skip-trigram-1l", "induction-2l"):
        path = os.path.join(HERE, "models", name, "model.safetensors")
        out = lambda what: os.path.join(folder, f"{name}_{what}.png")
        with mi.Model.load(path) as model:
            save(mi.plot.ov_eigenvalues(model), out("ov_eigenvalues"), pdf)
            if model.config["n_layers"] > 1:
                save(mi.plot.composition_heatmaps(model), out("composition"), pdf)
            tokens = [model.token_id(w) for w in INPUTS[name]]
            save(mi.plot.attribution_bars(model, tokens), out("attribution"), pdf)
            if name in VERSUS:
                a, b = (model.token_id(w) for w in VERSUS[name])
                save(mi.plot.attribution_bars(model, tokens, token=a, vs=b),
                     out("attribution_vs"), pdf)
            save(mi.plot.attention_patterns(model, tokens), out("attention"), pdf)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--pdf"]
    if len(args) != 1:
        sys.exit(f"usage: {sys.argv[0]} OUTPUT_FOLDER [--pdf]")
    main(args[0], pdf="--pdf" in sys.argv[1:])
