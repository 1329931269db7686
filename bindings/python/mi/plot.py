"""Figures of a model's circuits with matplotlib (Debian: python3-matplotlib).

``import mi`` does not need matplotlib; this module imports it when a
function here is called. Each function returns a matplotlib Figure.

- :func:`ov_eigenvalues`: every head's OV eigenvalues in the complex plane,
  one panel a head, radius log-scaled as in Elhage et al. (2021): mostly
  positive real means the head copies.
- :func:`composition_heatmaps`: Q-, K- and V-composition of every earlier
  head into every later one, side by side, coloured around the chance level.
- :func:`attribution_bars`: the largest parts of one logit (or logit
  difference, ``vs=``), by path, coloured by kind.
- :func:`attention_patterns`: heads' attention patterns on a prompt, token ×
  token (what CircuitsVis's ``attention_patterns`` shows).
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
    scale; the rings are labelled with the |λ| they stand for. Positive real
    eigenvalues (copying) are drawn in red. Each panel's title gives the
    copying score Σλ / Σ|λ|, the positive-real share of Σ|λ| and the top-1
    copying accuracy (with its chance level 1/d_vocab in the figure title)."""
    plt = _pyplot()
    config = model.config
    L, H = config["n_layers"], config["n_heads"]
    values = {}
    for l in range(L):
        for h in range(H):
            with model.ov(l, h) as circuit:
                values[l, h] = ([complex(z) for z in circuit.eigenvalues()],
                                circuit.eigen_summary(), circuit.copying_accuracy()[0])
    top = max(abs(z) for zs, _, _ in values.values() for z in zs) or 1.0
    floor = top / 10 ** decades
    fig, axes = plt.subplots(L, H, figsize=(2.6 * H, 2.8 * L + 0.6), squeeze=False)
    lim = decades + 0.35
    for (l, h), (zs, summary, top1) in values.items():
        ax = axes[l][h]
        points = [_log_radius(z, floor) for z in zs]
        real = [abs(z.imag) <= 1e-9 * top and z.real > 0 for z in zs]
        for mask, colour, label in ((False, "0.45", "other"),
                                    (True, "tab:red", "positive real")):
            chosen = [p for p, r in zip(points, real) if r == mask]
            ax.scatter([p.real for p in chosen], [p.imag for p in chosen], s=14,
                       color=colour, label=label, alpha=0.85, linewidths=0, zorder=3)
        for d in range(1, int(decades) + 1):
            ax.add_patch(plt.Circle((0, 0), d, fill=False, lw=0.6, color="0.75"))
            ax.text(d * 0.707, d * 0.707, f"{floor * 10 ** d:.2g}", fontsize=6.5,
                    color="0.4", ha="left", va="bottom")
        ax.axhline(0, lw=0.6, color="0.6", zorder=1)
        ax.axvline(0, lw=0.6, color="0.6", zorder=1)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("Re", fontsize=8, labelpad=1)
        ax.set_ylabel("Im", fontsize=8, labelpad=1)
        ax.set_title(f"L{l}H{h}  copying {summary.copying_score:+.2f}\n"
                     f"+real {summary.positive_real_fraction:.2f}, top-1 {top1:.2f}",
                     fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(f"OV eigenvalues: radius log10(|λ| / {floor:.2g}), rings labelled |λ|; "
                 f"top-1 chance {1 / config['d_vocab']:.3f}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def composition_heatmaps(model):
    """Q-, K- and V-composition scores of every head (rows, writer) into
    every head of a later layer (columns, reader), side by side, each cell
    labelled with its score. The colour scale is centred on the chance level
    (mi.Model.composition_baseline): white is chance, red above; the colour
    bar marks chance ± 2 sd."""
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
    cell = 0.42 if len(readers) <= 12 else 0.22
    width, height = cell * len(readers), cell * len(writers)
    fig, axes = plt.subplots(1, 3, figsize=(3 * width + 2.8, height + 1.6),
                             layout="constrained")
    labels = len(readers) <= 16
    for ax, kind in zip(axes, "QKV"):
        image = ax.imshow(grids[kind], cmap=cmap, norm=norm)
        ax.set_title(f"{kind}-composition", fontsize=11)
        ax.set_xticks(range(len(readers)))
        ax.set_xticklabels([f"L{l}H{h}" for l, h in readers], rotation=90, fontsize=9)
        ax.set_yticks(range(len(writers)))
        ax.set_yticklabels([f"L{l}H{h}" for l, h in writers], fontsize=9)
        ax.set_xlabel("later head (reads)", fontsize=9)
        if kind == "Q":
            ax.set_ylabel("earlier head (writes)", fontsize=9)
        if labels:
            for i, row in enumerate(grids[kind]):
                for j, v in enumerate(row):
                    if not math.isnan(v):
                        dark = abs(norm(v) - 0.5) > 0.3
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7.5,
                                color="white" if dark else "black")
    bar = fig.colorbar(image, ax=list(axes), shrink=0.9)
    bar.ax.axhline(mean, color="k", lw=1.5)
    bar.ax.axhspan(mean - 2 * std, mean + 2 * std, color="k", alpha=0.15)
    bar.set_label(f"score (chance {mean:.3f} ± {2 * std:.3f}, marked)", fontsize=9)
    return fig


#: Bar colours of attribution_bars, by path kind.
PART_COLOURS = {"direct": "0.45", "head": "tab:blue", "virtual head": "tab:purple",
                "bias": "tab:olive", "rest": "0.8"}


def _part_kind(part) -> str:
    if part.source != "embed":
        return "bias"
    return "direct" if part.order == 0 else "head" if part.order == 1 else "virtual head"


def _token_name(model, token: int) -> str:
    try:
        return repr(model.token_str(token))
    except MiError:  # no vocabulary: show the id
        return f"#{token}"


def attribution_bars(model, tokens: Sequence[int], position: int = -1,
                     token: Optional[int] = None, vs: Optional[int] = None, top: int = 12,
                     max_order: Optional[int] = None):
    """The ``top`` largest parts (by size) of the logit of ``token`` (default:
    the model's prediction) at ``position`` of ``tokens`` — minus the logit of
    ``vs`` when given, a logit difference — one bar a path
    (mi.Model.attribute), coloured by kind (direct, head, virtual head, bias),
    each labelled with its value; the rest summed in one bar. The title gives
    the prompt and the total, which equals the forward pass's logit (difference)."""
    plt = _pyplot()
    tokens = list(tokens)
    position = position % len(tokens)
    if token is None:
        row = model.forward(tokens)[position]
        row = row.tolist() if hasattr(row, "tolist") else row
        token = max(range(len(row)), key=row.__getitem__)
    parts = model.attribute(tokens, positions=[position], token=token, vs=vs,
                            max_order=max_order)
    values = [(float((p.logit_diff if vs is not None else p.token_logit)[0]), p.label,
               _part_kind(p)) for p in parts]
    total = sum(v for v, _, _ in values)
    values.sort(key=lambda x: -abs(x[0]))
    shown = values[:top]
    rest = values[top:]
    if rest:
        shown.append((sum(v for v, _, _ in rest), f"{len(rest)} other parts", "rest"))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(shown) + 1.8), layout="constrained")
    ax.barh(range(len(shown)), [v for v, _, _ in shown],
            color=[PART_COLOURS[k] for _, _, k in shown])
    span = max(abs(v) for v, _, _ in shown) or 1.0
    for i, (v, _, _) in enumerate(shown):
        ax.text(v + (0.01 if v >= 0 else -0.01) * span * 2, i, f"{v:+.2f}", va="center",
                ha="left" if v >= 0 else "right", fontsize=8)
    ax.set_xlim(-span * 1.25 if any(v < 0 for v, _, _ in shown) else 0, span * 1.25)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([name for _, name, _ in shown], fontsize=9)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.6)
    from matplotlib.patches import Patch
    kinds = [k for k in ("direct", "head", "virtual head", "bias") if any(k == x for _, _, x in shown)]
    ax.legend([Patch(color=PART_COLOURS[k]) for k in kinds], kinds, fontsize=8,
              loc="lower right", frameon=False)
    words = " ".join(_token_name(model, t).strip("'") for t in tokens)
    if len(words) > 90:
        words = "…" + words[-89:]
    what = f"logit of {_token_name(model, token)}"
    if vs is not None:
        what += f" − logit of {_token_name(model, vs)}"
    ax.set_title(f"prompt: {words}\n{what} at position {position} "
                 f"({_token_name(model, tokens[position])}): {total:.2f}", fontsize=9)
    ax.set_xlabel("contribution" + (" to the logit difference" if vs is not None else
                                    " to the logit"), fontsize=9)
    return fig


def attention_patterns(model, tokens: Sequence[int], heads: Optional[Sequence] = None,
                       columns: Optional[int] = None):
    """Attention patterns of ``heads`` (default: every head; (layer, head)
    pairs) on ``tokens``, one panel a head: rows are destinations (queries),
    columns sources (keys), both labelled with the tokens; entries past the
    destination are masked (causal)."""
    plt = _pyplot()
    tokens = list(tokens)
    config = model.config
    L, H = config["n_layers"], config["n_heads"]
    heads = [(l, h) for l in range(L) for h in range(H)] if heads is None else list(heads)
    patterns = model.forward(tokens, patterns=True).patterns
    patterns = patterns.tolist() if hasattr(patterns, "tolist") else patterns
    n = len(tokens)
    columns = columns or min(len(heads), 4)
    rows = (len(heads) + columns - 1) // columns
    size = max(2.6, min(6.0, 0.22 * n + 1.2))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.3),
                             squeeze=False, layout="constrained")
    names = [_token_name(model, t).strip("'") for t in tokens]
    cmap = plt.get_cmap("Reds").copy()
    cmap.set_bad("white")
    for k, ax in enumerate(axes.flat):
        if k >= len(heads):
            ax.axis("off")
            continue
        l, h = heads[k]
        grid = [[patterns[l][h][t][s] if s <= t else math.nan for s in range(n)]
                for t in range(n)]
        image = ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=1.0)
        ax.set_title(f"L{l}H{h}", fontsize=10)
        ticks = range(n) if n <= 40 else range(0, n, max(1, n // 20))
        ax.set_xticks(list(ticks))
        ax.set_yticks(list(ticks))
        ax.set_xticklabels([names[i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticklabels([names[i] for i in ticks], fontsize=7)
        ax.set_xlabel("source (key)", fontsize=8)
        ax.set_ylabel("destination (query)", fontsize=8)
    fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="attention")
    return fig
