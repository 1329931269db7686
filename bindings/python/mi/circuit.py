"""mi_circuit as a Python object: a matrix kept as a product of two factors."""

import ctypes
import weakref
from typing import List, NamedTuple, Optional, Tuple

from ._native import EigenSummary as _EigenSummary, lib
from .arrays import OutArray, check_materialise, float32_matrix, index, numpy, size, span
from .lifetime import Guard, reads
from .enums import TOPK_COLUMNS as _TOPK_COLUMNS, TOPK_SMALLEST as _TOPK_SMALLEST


class EigenSummary(NamedTuple):
    """Eigenvalue statistics of a square circuit (mi_eigen_summary)."""
    copying_score: float           #: Σλ / Σ|λ| over the non-zero eigenvalues, in [-1, 1]
    positive_real_fraction: float  #: share of Σ|λ| on positive real eigenvalues
    nonzero: int                   #: eigenvalues counted as non-zero

    @classmethod
    def _of(cls, c):
        return cls(c.copying_score, c.positive_real_fraction, c.nonzero)


class Circuit:
    """An n × m matrix M = A·B kept factored (mi_circuit). Queries answer from
    the factors; only :meth:`rows`, :meth:`cols` and :meth:`dense` write n·m
    numbers. A circuit keeps its model alive inside libmi, so circuits and
    models may be closed in any order. Free it with ``close()`` or a ``with``
    block; a finaliser frees it otherwise."""

    def __init__(self, handle: int, borrowed: bool = False):
        free = (lambda h: None) if borrowed else (lambda h: lib.mi_circuit_free(ctypes.c_void_p(h)))
        self._guard = Guard(handle, free, "circuit")
        self._finalizer = None if borrowed else weakref.finalize(self, self._guard.close)

    @staticmethod
    def _make(fn, *args) -> "Circuit":
        out = ctypes.c_void_p()
        fn(ctypes.byref(out), *args)
        return Circuit(out.value)

    @classmethod
    def from_factors(cls, A, B) -> "Circuit":
        """The circuit A·B from caller factors (copied): A is n × r, B is r × m
        (numpy, torch, buffers or nested lists; converted to float32)."""
        pa, n, r, lda, keep_a = float32_matrix(A, "A")
        pb, r2, m, ldb, keep_b = float32_matrix(B, "B")
        if r2 != r:
            raise ValueError(f"A has {r} columns but B has {r2} rows")
        out = ctypes.c_void_p()
        lib.mi_circuit_from_factors(ctypes.byref(out), n, r, m, pa, lda, pb, ldb)
        return cls(out.value)

    def _h(self) -> ctypes.c_void_p:
        return self._guard.pointer()

    def close(self) -> None:
        """Frees the circuit (idempotent) once no call on it is running; its
        model goes too if this held the last reference. From inside a call
        on it (a callback) it raises MiStateError."""
        self._guard.close()

    def __enter__(self) -> "Circuit":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._guard.closed:
            return "<mi.Circuit closed>"
        n, m = self.shape
        return f"<mi.Circuit {n}x{m} rank {self.rank}>"

    @reads
    def _shape3(self) -> Tuple[int, int, int]:
        n, m, r = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
        lib.mi_circuit_shape(ctypes.byref(n), ctypes.byref(m), ctypes.byref(r), self._h())
        return n.value, m.value, r.value

    @property
    def shape(self) -> Tuple[int, int]:
        """(rows, columns): [n, m]."""
        return self._shape3()[:2]

    @property
    def rank(self) -> int:
        """The factor rank r (an upper bound on the matrix's rank)."""
        return self._shape3()[2]

    @reads
    def entry(self, i: int, j: int) -> float:
        """M[i][j], a dot product of two factor rows in double."""
        n, m = self.shape
        out = ctypes.c_double()
        lib.mi_circuit_entry(ctypes.byref(out), self._h(), index(i, n, "row"),
                             index(j, m, "column"))
        return out.value

    @reads
    def rows(self, i0: int, i1: Optional[int] = None):
        """Rows i0 … i1 − 1 (default: row i0 only) as an (i1 − i0) × m float32
        matrix, written by libmi straight into the numpy array."""
        n, m = self.shape
        i0, i1 = span(i0, i1 if i1 is not None else index(i0, n, "row") + 1, n, "rows")
        out = OutArray((i1 - i0, m), ctypes.c_float)
        lib.mi_circuit_rows(out.pointer, m, self._h(), i0, i1)
        return out.result()

    @reads
    def cols(self, j0: int, j1: Optional[int] = None):
        """Columns j0 … j1 − 1 (default: column j0 only) as an n × (j1 − j0) matrix."""
        n, m = self.shape
        j0, j1 = span(j0, j1 if j1 is not None else index(j0, m, "column") + 1, m, "cols")
        width = j1 - j0
        out = OutArray((n, width), ctypes.c_float)
        lib.mi_circuit_cols(out.pointer, max(width, 1), self._h(), j0, j1)
        return out.result()

    @reads
    def dense(self):
        """The whole n × m matrix (float32). For token circuits of a large
        vocabulary prefer the streaming queries."""
        n, m = self.shape
        out = OutArray((n, m), ctypes.c_float)
        lib.mi_circuit_dense(out.pointer, m, self._h())
        return out.result()

    @reads
    def topk(self, k: int, axis: int = 1, largest: bool = True, start: int = 0,
             stop: Optional[int] = None):
        """The k best entries of each line, best first, as ``(indices, values)``,
        each lines × k. ``axis=1``: the k largest (``largest=False``: smallest)
        entries of each row, indices are columns; ``axis=0``: of each column,
        indices are rows. ``start``/``stop`` choose lines (default all).
        Streamed: memory does not grow with the matrix."""
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0 or 1, not {axis!r}")
        n, m = self.shape
        start, stop = span(start, stop, n if axis == 1 else m, "topk lines")
        k = size(k, "k")
        if not 1 <= k <= (m if axis == 1 else n):
            raise ValueError(f"topk: k = {k}, but a line has {m if axis == 1 else n} entries")
        lines = stop - start
        flags = (_TOPK_COLUMNS if axis == 0 else 0) | (0 if largest else _TOPK_SMALLEST)
        index = OutArray((lines, k), ctypes.c_size_t)
        value = OutArray((lines, k), ctypes.c_float)
        lib.mi_circuit_topk(index.pointer, value.pointer, max(k, 1), self._h(), k, flags,
                            start, stop)
        return index.result(), value.result()

    def __array__(self, dtype=None, copy=None):
        """np.asarray(circuit): the dense matrix when it has at most
        mi.arrays.MATERIALISE_LIMIT entries; ValueError naming the size
        otherwise."""
        if numpy is None:
            raise ImportError("np.asarray(circuit) needs numpy")
        check_materialise(self.shape, "the circuit")
        dense = self.dense()
        return dense if dtype is None else dense.astype(dtype)

    @reads
    def row_stats(self, axis: int = 1, start: int = 0, stop: Optional[int] = None):
        """``(mean, std)`` of each line (population, in double), in closed form
        from the factors: ``axis=1`` each row, over its m entries; ``axis=0``
        each column. ``start``/``stop`` choose lines (default all). For
        z-scores ``(x - mean) / std`` without forming the matrix."""
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0 or 1, not {axis!r}")
        n, m = self.shape
        start, stop = span(start, stop, n if axis == 1 else m, "row_stats lines")
        lines = stop - start
        mean = OutArray((lines,), ctypes.c_double)
        std = OutArray((lines,), ctypes.c_double)
        lib.mi_circuit_row_stats(mean.pointer, std.pointer, self._h(), start, stop,
                                 _TOPK_COLUMNS if axis == 0 else 0)
        return mean.result(), std.result()

    @reads
    def transpose(self) -> "Circuit":
        """Mᵀ = Bᵀ Aᵀ, sharing the factors (row form ↔ the paper's column form)."""
        return Circuit._make(lib.mi_circuit_transpose, self._h())

    @property
    def T(self) -> "Circuit":
        """The transpose (a new circuit; see :meth:`transpose`)."""
        return self.transpose()

    @reads
    def compose(self, other: "Circuit") -> "Circuit":
        """The product self · other, still factored."""
        if not isinstance(other, Circuit):
            raise TypeError(f"compose needs a Circuit, not {type(other).__name__}")
        return Circuit._make(lib.mi_circuit_compose, self._h(), other._h())

    def __matmul__(self, other: "Circuit") -> "Circuit":
        if not isinstance(other, Circuit):
            return NotImplemented
        return self.compose(other)

    @reads
    def frobenius_norm(self) -> float:
        """‖AB‖_F from the two r × r Gram matrices, in double."""
        out = ctypes.c_double()
        lib.mi_circuit_frobenius_norm(ctypes.byref(out), self._h())
        return out.value

    @reads
    def singular_values(self, count: Optional[int] = None):
        """The ``count`` largest singular values, decreasing (default:
        min(n, m, rank), the ones that can be non-zero)."""
        n, m, r = self._shape3()
        count = min(n, m, r) if count is None else size(count, "count")
        out = OutArray((count,), ctypes.c_double)
        lib.mi_circuit_singular_values(out.pointer, count, self._h())
        return out.result()

    @reads
    def eigenvalues(self, count: Optional[int] = None):
        """The ``count`` eigenvalues [count] of largest modulus of a square
        circuit (default min(n, rank)), as complex numbers: a numpy complex128 array,
        or a list of ``complex`` without numpy. Conjugate pairs are adjacent."""
        n, _, r = self._shape3()
        count = min(n, r) if count is None else size(count, "count")
        re = OutArray((count,), ctypes.c_double)
        im = OutArray((count,), ctypes.c_double)
        lib.mi_circuit_eigenvalues(re.pointer, im.pointer, count, self._h())
        if numpy is not None:
            return re.array + 1j * im.array
        return [complex(a, b) for a, b in zip(re.result(), im.result())]

    @reads
    def eigen_summary(self) -> EigenSummary:
        """Copying score, positive-real share and non-zero count of the eigenvalues."""
        out = _EigenSummary()
        out.struct_size = ctypes.sizeof(_EigenSummary)
        lib.mi_circuit_eigen_summary(ctypes.byref(out), self._h())
        return EigenSummary._of(out)

    def copying_score(self) -> float:
        """Σλ / Σ|λ| over the non-zero eigenvalues: near 1 for a copying head's OV circuit."""
        return self.eigen_summary().copying_score

    @reads
    def prev_token_share(self) -> float:
        """For a positional QK circuit: the share of query positions whose best
        causal key is the previous position."""
        out = ctypes.c_double()
        lib.mi_circuit_prev_token_share(ctypes.byref(out), self._h())
        return out.value

    @reads
    def diag_rank(self, start: int = 0, stop: Optional[int] = None):
        """For rows start … stop − 1 of a square circuit, how many entries of
        the row exceed its diagonal entry (0: the diagonal wins)."""
        n, _ = self.shape
        start, stop = span(start, stop, n, "diag_rank rows")
        out = OutArray((stop - start,), ctypes.c_size_t)
        lib.mi_circuit_diag_rank(out.pointer, self._h(), start, stop)
        return out.result()

    @reads
    def copying_accuracy(self) -> Tuple[float, float]:
        """(top-1, top-5): the share of rows whose diagonal entry ranks first,
        and within the first five, in its row."""
        top1, top5 = ctypes.c_double(), ctypes.c_double()
        lib.mi_circuit_copying_accuracy(ctypes.byref(top1), ctypes.byref(top5), self._h())
        return top1.value, top5.value


def heads_label(heads: List[Tuple[int, int]]) -> str:
    """"L0H3->L1H0" for a path through heads (0.3) and (1.0)."""
    return "->".join(f"L{l}H{h}" for l, h in heads)
