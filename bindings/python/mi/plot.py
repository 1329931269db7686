"""Figures of a model's circuits with matplotlib (Debian: python3-matplotlib).

``import mi`` does not need matplotlib; this module imports it when a
function here is called. Each function returns a matplotlib Figure.

- :func:`ov_eigenvalues`: every head's OV eigenvalues in the complex plane,
  one panel a head, radius log-scaled as in Elhage et al. (2021): mostly
  positive real means the head copies.
- :func:`composition_heatmaps`: Q-, K- and V-composition of every earlier
  head into every later one, side by side, coloured around the chance level.
- :func:`attribution_bars`: the largest parts of one logit, by path.
"""

import cmath
import math
from typing import Optional, Sequence

from ._native import MiError


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("mi.plot needs matplotlib (Debian: apt-get install "
                          "python3-matplotlib; pip: pip install matplotlib)") from e
    return plt


def _log_radius(z: complex, floor: float) -> complex:
    """z with its modulus mapped to log10(|z| / floor), kept ≥ 0: small
    eigenvalues sit near the centre, large ones spread over decades."""
    r = abs(z)
    if r <= floor:
        return 0j
    return cmath.rect(math.log10(r / floor), cmath.phase(z))


def ov_eigenvalues(model, decades: float = 3.0):
    """Each head's token OV eigenvalues (W_E W_V W_O W_U) in the complex plane,
    a grid of n_layers × n_heads panels. The radius is log10(|λ| / floor) with
    floor = max|λ| / 10^decades over the model, so every panel shares one
    scale; positive real eigenvalues (copying) are drawn in a second colour.
    The panel title gives the copying score Σλ / Σ|λ|."""
    plt = _pyplot()
    config = model.config
    L, H = config["n_layers"], config["n_heads"]
    values = {}
    for l in range(L):
        for h in range(H):
            with model.ov(l, h) as circuit:
                values[l, h] = ([complex(z) for z in circuit.eigenvalues()],
                                circuit.copying_score())
    top = max(abs(z) for zs, _ in values.values() for z in zs) or 1.0
    floor = top / 10 ** decades
    fig, axes = plt.subplots(L, H, figsize=(2.3 * H, 2.4 * L + 0.4), squeeze=False)
    for (l, h), (zs, score) in values.items():
        ax = axes[l][h]
        points = [_log_radius(z, floor) for z in zs]
        real = [abs(z.imag) <= 1e-9 * top and z.real > 0 for z in zs]
        for mask, colour, label in ((False, "tab:gray", "other"),
                                    (True, "tab:red", "positive real")):
            chosen = [p for p, r in zip(points, real) if r == mask]
            ax.scatter([p.real for p in chosen], [p.imag for p in chosen], s=10,
                       color=colour, label=label, alpha=0.8, linewidths=0)
        for d in range(1, int(decades) + 1):
            ax.add_patch(plt.Circle((0, 0), d, fill=False, lw=0.5, color="0.8"))
        ax.axhline(0, lw=0.5, color="0.6")
        ax.axvline(0, lw=0.5, color="0.6")
        ax.set_xlim(-decades - 0.3, decades + 0.3)
        ax.set_ylim(-decades - 0.3, decades + 0.3)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"L{l}H{h}  copying {score:+.2f}", fontsize=9)
    axes[0][0].legend(loc="lower left", fontsize=6, frameon=False)
    fig.suptitle(f"OV eigenvalues (radius log10 |λ|, circles every decade "
                 f"from {floor:.2g})", fontsize=10)
    fig.tight_layout()
    return fig


def composition_heatmaps(model):
    """Q-, K- and V-composition scores of every head (rows, writer) into
    every head of a later layer (columns, reader), side by side. The colour
    scale is centred on the chance level (mi.Model.composition_baseline):
    white is chance, red above; the colour bar marks it."""
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm
    config = model.config
    L, H = config["n_layers"], config["n_heads"]
    mean, std, _ = model.composition_baseline()
    writers = [(l, h) for l in range(L - 1) for h in range(H)]
    readers = [(l, h) for l in range(1, L) for h in range(H)]
    if not writers:
        raise ValueError("a 1-layer model has no composition")
    grids = {}
    for kind in "QKV":
        scores = model.composition_scores(kind)
        scores = scores.tolist() if hasattr(scores, "tolist") else scores
        # Pairs that cannot compose (reader not later) are blank, not 0.
        grids[kind] = [[scores[l1][h1][l2][h2] if l2 > l1 else math.nan for l2, h2 in readers]
                       for l1, h1 in writers]
    top = max(x for g in grids.values() for r in g for x in r if not math.isnan(x))
    norm = TwoSlopeNorm(vmin=0.0, vcenter=mean, vmax=max(top, mean * 1.01))
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("0.92")
    fig, axes = plt.subplots(1, 3, figsize=(2.2 * 3 + 1.2 + 0.25 * len(readers), 3.2))
    for ax, kind in zip(axes, "QKV"):
        image = ax.imshow(grids[kind], cmap=cmap, norm=norm)
        ax.set_title(f"{kind}-composition", fontsize=10)
        ax.set_xticks(range(len(readers)))
        ax.set_xticklabels([f"L{l}H{h}" for l, h in readers], rotation=90, fontsize=7)
        ax.set_yticks(range(len(writers)))
        ax.set_yticklabels([f"L{l}H{h}" for l, h in writers], fontsize=7)
        ax.set_xlabel("later head (reads)", fontsize=8)
        if kind == "Q":
            ax.set_ylabel("earlier head (writes)", fontsize=8)
    bar = fig.colorbar(image, ax=list(axes), shrink=0.85)
    bar.ax.axhline(mean, color="k", lw=1.5)
    bar.ax.axhspan(mean - 2 * std, mean + 2 * std, color="k", alpha=0.15)
    bar.set_label(f"score (chance {mean:.3f} ± {2 * std:.3f}, marked)", fontsize=8)
    return fig


def attribution_bars(model, tokens: Sequence[int], position: int = -1,
                     token: Optional[int] = None, top: int = 12, max_order: Optional[int] = None):
    """The ``top`` largest parts (by size) of the logit of ``token`` (default:
    the model's prediction) at ``position`` of ``tokens``, one bar a path
    (mi.Model.attribute), the rest summed in one bar; the title gives the
    total, which equals the forward pass's logit."""
    plt = _pyplot()
    tokens = list(tokens)
    position = position % len(tokens)
    if token is None:
        row = model.forward(tokens)[position]
        row = row.tolist() if hasattr(row, "tolist") else row
        token = max(range(len(row)), key=row.__getitem__)
    parts = model.attribute(tokens, positions=[position], token=token, max_order=max_order)
    values = [(float(p.token_logit[0]), p.label) for p in parts]
    total = sum(v for v, _ in values)
    values.sort(key=lambda x: -abs(x[0]))
    shown = values[:top]
    rest = values[top:]
    if rest:
        shown.append((sum(v for v, _ in rest), f"{len(rest)} other parts"))
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(shown) + 1.2))
    ax.barh(range(len(shown)), [v for v, _ in shown],
            color=["tab:red" if v > 0 else "tab:blue" for v, _ in shown])
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([name for _, name in shown], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.5)
    try:
        name = repr(model.token_str(token))
    except MiError:  # no vocabulary: show the id
        name = f"token {token}"
    ax.set_title(f"logit of {name} at position {position}: {total:.2f}", fontsize=9)
    ax.set_xlabel("contribution to the logit", fontsize=8)
    fig.tight_layout()
    return fig
