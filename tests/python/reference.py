"""Straightforward references in pure Python (double, lists), independent of
libmi's factored algorithms, and a small random model to run them on."""

import cmath
import math
import random

import mi


def tolist(x):
    return x.tolist() if hasattr(x, "tolist") else x


def matmul(a, b):
    bt = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) for col in bt] for row in a]


def transpose(a):
    return [list(r) for r in zip(*a)]


def add_row(a, v):
    return [[x + y for x, y in zip(row, v)] for row in a]


def scale(a, s):
    return [[x * s for x in row] for row in a]


def frobenius(a):
    return math.sqrt(sum(x * x for row in a for x in row))


def trace_power(a, k):
    p = a
    for _ in range(k - 1):
        p = matmul(p, a)
    return sum(p[i][i] for i in range(len(a)))


def eigenvalues_from_traces(a, r):
    """The r eigenvalues of largest modulus of a matrix of rank ≤ r: the
    roots of the characteristic polynomial of its non-zero part, built from
    the traces tr(Aᵏ), k ≤ r (Newton's identities), solved by Durand-Kerner."""
    p = [trace_power(a, k) for k in range(1, r + 1)]
    e = [1.0]
    for k in range(1, r + 1):
        e.append(sum((-1) ** (i - 1) * e[k - i] * p[i - 1] for i in range(1, k + 1)) / k)
    coeffs = [(-1) ** k * e[k] for k in range(r + 1)]  # λʳ + c₁λʳ⁻¹ + …
    poly = lambda z: sum(c * z ** (r - k) for k, c in enumerate(coeffs))
    bound = 1 + max(abs(c) for c in coeffs[1:])
    roots = [bound * cmath.exp(2j * math.pi * (k + 0.25) / r) for k in range(r)]
    for _ in range(500):
        roots = [z - poly(z) / math.prod(z - w for j, w in enumerate(roots) if j != i)
                 for i, z in enumerate(roots)]
    return sorted(roots, key=lambda z: -abs(z))


def causal_softmax(scores):
    out = []
    for t, row in enumerate(scores):
        top = max(row[:t + 1])
        w = [math.exp(x - top) for x in row[:t + 1]]
        total = sum(w)
        out.append([x / total for x in w] + [0.0] * (len(row) - t - 1))
    return out


def normalise(rows, eps):
    out = []
    for row in rows:
        mean = sum(row) / len(row)
        var = sum((x - mean) ** 2 for x in row) / len(row)
        out.append([(x - mean) / math.sqrt(var + eps) for x in row])
    return out


def layer_norm(rows, eps, w, b):
    """LayerNorm with scale w and shift b; the rows themselves when w is None."""
    if w is None:
        return rows
    return [[x * wi + bi for x, wi, bi in zip(row, w, b)] for row in normalise(rows, eps)]


def forward(model, tokens):
    """The model's logits, its attention patterns [L][H][n][n] and its
    residual streams, in double from model.weight. For a folded shortformer
    model model.weight has only the token side of W_Q and W_K: use
    forward_weights on the raw weights instead."""
    def W(name, l=0, h=0):
        try:
            return tolist(model.weight(name, l, h))
        except mi.MiError:  # a part the model lacks
            return None
    return run(W, model.config, tokens, model.positional)


def forward_weights(weights, config, tokens, positional):
    """forward() from a dict of weights as Model.from_arrays takes them
    (unprocessed, LayerNorm scale and shift included)."""
    def W(name, l=0, h=0):
        v = weights.get(name)
        if v is None:
            return None
        if name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
            return tolist(v[l][h])
        return tolist(v[l]) if name in ("b_O", "ln1.w", "ln1.b") else tolist(v)
    return run(W, config, tokens, positional)


def run(W, c, tokens, positional):
    """The forward pass of weights W(name, layer, head) (None: the model lacks
    it) of shape c. positional "standard" adds W_pos to the stream,
    "shortformer" to each layer's query and key inputs after ln1."""
    L, H, dh, D = c["n_layers"], c["n_heads"], c["d_head"], c["d_model"]
    G = c["n_kv_heads"] or H
    zero = [0.0] * D
    E, P = W("W_E"), W("W_pos")
    pos = P if positional == "shortformer" else None
    x = [[e + (p if positional == "standard" else 0.0) for e, p in zip(E[t], P[i] if P else zero)]
         for i, t in enumerate(tokens)]
    bias = lambda name, l, h, n: W(name, l, h) or [0.0] * n
    patterns, streams = [], [x]
    for l in range(L):
        ln = layer_norm(x, c["ln_eps"], W("ln1.w", l), W("ln1.b", l))
        qk_in = [[a + b for a, b in zip(row, pos[i])] for i, row in enumerate(ln)] if pos else ln
        out = [list(W("b_O", l) or zero) for _ in tokens]
        layer = []
        for h in range(H):
            g = h // (H // G)
            q = add_row(matmul(qk_in, W("W_Q", l, h)), bias("b_Q", l, h, dh))
            k = add_row(matmul(qk_in, W("W_K", l, g)), bias("b_K", l, g, dh))
            v = add_row(matmul(ln, W("W_V", l, g)), bias("b_V", l, g, dh))
            a = causal_softmax(scale(matmul(q, transpose(k)), 1 / math.sqrt(dh)))
            layer.append(a)
            z = matmul(matmul(a, v), W("W_O", l, h))
            out = [[o + y for o, y in zip(ro, rz)] for ro, rz in zip(out, z)]
        patterns.append(layer)
        x = [[a + b for a, b in zip(ra, rb)] for ra, rb in zip(x, out)]
        streams.append(x)
    final = layer_norm(x, c["ln_eps"], W("ln_final.w"), W("ln_final.b"))
    logits = add_row(matmul(final, W("W_U")), W("b_U") or [0.0] * c["d_vocab"])
    return logits, patterns, streams


def random_weights(seed=7, n_layers=2, n_heads=2, d_model=6, d_head=3, d_vocab=7, n_ctx=5):
    """Random weights of every optional part, as Model.from_arrays takes them."""
    rng = random.Random(seed)
    mat = lambda r, c, s=1.0: [[rng.gauss(0, s) for _ in range(c)] for _ in range(r)]
    vec = lambda n, s=1.0, m=0.0: [m + rng.gauss(0, s) for _ in range(n)]
    L, H, D, dh, V = n_layers, n_heads, d_model, d_head, d_vocab
    per_head = lambda f: [[f() for _ in range(H)] for _ in range(L)]
    return {
        "W_E": mat(V, D), "W_pos": mat(n_ctx, D, 0.5), "W_U": mat(D, V), "b_U": vec(V, 0.1),
        "W_Q": per_head(lambda: mat(D, dh)), "W_K": per_head(lambda: mat(D, dh)),
        "W_V": per_head(lambda: mat(D, dh)), "W_O": per_head(lambda: mat(dh, D)),
        "b_Q": per_head(lambda: vec(dh, 0.3)), "b_K": per_head(lambda: vec(dh, 0.3)),
        "b_V": per_head(lambda: vec(dh, 0.3)), "b_O": [vec(D, 0.1) for _ in range(L)],
        "ln1.w": [vec(D, 0.1, 1.0) for _ in range(L)], "ln1.b": [vec(D, 0.1) for _ in range(L)],
        "ln_final.w": vec(D, 0.1, 1.0), "ln_final.b": vec(D, 0.1),
    }


def random_model(seed=7, n_layers=2, n_heads=2, d_model=6, d_head=3, d_vocab=7, n_ctx=5):
    """A model with every optional part and random weights, LayerNorm folded."""
    weights = random_weights(seed, n_layers, n_heads, d_model, d_head, d_vocab, n_ctx)
    return mi.Model.from_arrays(weights, n_layers=n_layers, n_heads=n_heads, d_model=d_model,
                                d_head=d_head, d_vocab=d_vocab, n_ctx=n_ctx)
