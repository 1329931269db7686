#!/usr/bin/env python3
"""Draws the three mi.plot figures for the two shipped models into a folder:

    PYTHONPATH=bindings/python MI_LIBRARY=build/lib/libmi.so.0 \
        python3 examples/plots.py out/

writes out/<model>_ov_eigenvalues.png, out/<model>_composition.png (2-layer
model only: a 1-layer model has no composition) and
out/<model>_attribution.png. Needs matplotlib (Debian: python3-matplotlib)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

import mi
import mi.plot

# An input for the attribution chart: a repeated span, so that the 2-layer
# model's induction heads predict the next token of the repeat.
INPUTS = {
    "induction-2l": ["<bos>", "ka", "mo", "zu", "pe", "ri", "go", "ka", "mo", "zu", "pe"],
    "skip-trigram-1l": ["<bos>", "keep", "the", "old", "names", "of", "a", "in"],
}


def save(fig, path):
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(path)


def main(folder):
    os.makedirs(folder, exist_ok=True)
    for name in ("skip-trigram-1l", "induction-2l"):
        path = os.path.join(HERE, "models", name, "model.safetensors")
        with mi.Model.load(path) as model:
            save(mi.plot.ov_eigenvalues(model), os.path.join(folder, f"{name}_ov_eigenvalues.png"))
            if model.config["n_layers"] > 1:
                save(mi.plot.composition_heatmaps(model),
                     os.path.join(folder, f"{name}_composition.png"))
            tokens = [model.token_id(w) for w in INPUTS[name]]
            save(mi.plot.attribution_bars(model, tokens),
                 os.path.join(folder, f"{name}_attribution.png"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTPUT_FOLDER")
    main(sys.argv[1])
