"""FactoredMatrix: a matrix kept as the product A·B of two factors, as
TransformerLens's FactoredMatrix, for the d_model-sized circuits
``model.OV`` (W_V W_O) and ``model.QK`` (W_Q W_Kᵀ), with leading (layer,
head) axes that index like numpy. Every query works from the factors in
double precision: nothing d_model × d_model (or d_vocab × d_vocab, after
``W_E @ ... @ W_U``) is formed unless asked (``.AB``, ``np.asarray``).
Needs numpy. For vocabulary-sized work that streams (top-k of a 50k × 50k
token circuit), :meth:`FactoredMatrix.circuit` hands the factors to libmi.
"""

from .arrays import check_materialise, numpy


def _need_numpy():
    if numpy is None:
        raise ImportError("mi.FactoredMatrix (model.OV, model.QK) needs numpy; without it "
                          "use model.ov(l, h) / model.qk(l, h), libmi's own circuits")


def _factor(x, name):
    if isinstance(x, FactoredMatrix):
        raise TypeError(f"{name}: a FactoredMatrix is not a factor")
    from .arrays import host_array, to_numpy
    arr = to_numpy(host_array(x, name)).astype(numpy.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name}: a factor needs at least 2 dimensions, got shape "
                         f"{list(arr.shape)}")
    return arr


class FactoredMatrix:
    """M = A·B with A [..., m, r] and B [..., r, n] (float64), the leading
    axes shared (e.g. [L, H] for ``model.OV``).

    ``.A``, ``.B``; ``.AB`` (the dense [..., m, n]) and ``.BA`` (the small
    [..., r, r], square circuits); ``.T``; ``@`` with arrays on either side
    and with other FactoredMatrix objects, staying factored; ``[l, h]``,
    ``[l]``, ``[:, h]`` index the leading axes; ``.svd()``, ``.eigenvalues``,
    ``.eig()``, ``.norm()``; ``np.asarray(fm)`` materialises AB when it has
    at most mi.arrays.MATERIALISE_LIMIT entries and refuses otherwise.
    """

    __array_priority__ = 1000  # ndarray @ FactoredMatrix goes to __rmatmul__

    def __init__(self, A, B):
        _need_numpy()
        self.A, self.B = _factor(A, "A"), _factor(B, "B")
        if self.A.shape[-1] != self.B.shape[-2]:
            raise ValueError(f"A {list(self.A.shape)} and B {list(self.B.shape)}: A's columns "
                             "must equal B's rows")
        if self.A.shape[:-2] != self.B.shape[:-2]:
            raise ValueError(f"A {list(self.A.shape)} and B {list(self.B.shape)}: the leading "
                             "axes differ")

    # ---- shape ---------------------------------------------------------------

    @property
    def shape(self):
        """[..., m, n]: the leading axes, then the matrix's own two."""
        return self.A.shape[:-1] + self.B.shape[-1:]

    @property
    def ndim(self):
        """len(shape)."""
        return len(self.shape)

    @property
    def rdim(self):
        """The inner dimension r (an upper bound on the rank)."""
        return self.A.shape[-1]

    def __len__(self):
        """The first axis's length."""
        return self.shape[0]

    def __repr__(self):
        return f"<mi.FactoredMatrix {list(self.shape)} rank {self.rdim}>"

    def __getitem__(self, idx):
        """Indexes the leading axes (not the matrix's own two)."""
        if not isinstance(idx, tuple):
            idx = (idx,)
        lead = self.ndim - 2
        if len([i for i in idx if i is not Ellipsis]) > lead:
            raise IndexError(f"FactoredMatrix {list(self.shape)}: {lead} leading axes to "
                             f"index, got {len(idx)} indices")
        return FactoredMatrix(self.A[idx], self.B[idx])

    # ---- products --------------------------------------------------------------

    @property
    def AB(self):
        """The dense product [..., m, n]."""
        return self.A @ self.B

    @property
    def BA(self):
        """B·A [..., r, r]: the same non-zero eigenvalues as AB (square only)."""
        if self.shape[-1] != self.shape[-2]:
            raise ValueError(f"BA: the matrix {list(self.shape[-2:])} is not square")
        return self.B @ self.A

    @property
    def T(self):
        """The transpose Bᵀ·Aᵀ, still factored."""
        return FactoredMatrix(numpy.swapaxes(self.B, -1, -2), numpy.swapaxes(self.A, -1, -2))

    def __matmul__(self, other):
        if isinstance(other, FactoredMatrix):
            middle = self.B @ other.A  # [..., r1, r2]
            if self.rdim <= other.rdim:
                return FactoredMatrix(self.A, middle @ other.B)
            return FactoredMatrix(self.A @ middle, other.B)
        other = _factor(other, "right operand")
        if other.shape[-2] != self.shape[-1]:
            raise ValueError(f"{list(self.shape)} @ {list(other.shape)}: inner sizes differ")
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other):
        other = _factor(other, "left operand")
        if other.shape[-1] != self.shape[-2]:
            raise ValueError(f"{list(other.shape)} @ {list(self.shape)}: inner sizes differ")
        return FactoredMatrix(other @ self.A, self.B)

    def __mul__(self, scalar):
        if isinstance(scalar, (int, float)) and not isinstance(scalar, bool):
            return FactoredMatrix(self.A * scalar, self.B)
        return NotImplemented

    __rmul__ = __mul__

    # ---- spectra and norms --------------------------------------------------------

    def svd(self):
        """(U [..., m, k], S [..., k], V [..., n, k]) with AB = U·diag(S)·Vᵀ,
        k = min(m, n, r), S decreasing, from the factors in double: A = Q_A R_A,
        Bᵀ = Q_B R_B, then the SVD of the small R_A R_Bᵀ. (V, not Vᵀ, as
        TransformerLens's FactoredMatrix.svd returns it.)"""
        qa, ra = numpy.linalg.qr(self.A)
        qb, rb = numpy.linalg.qr(numpy.swapaxes(self.B, -1, -2))
        u, s, vh = numpy.linalg.svd(ra @ numpy.swapaxes(rb, -1, -2))
        k = min(self.shape[-2], self.shape[-1], self.rdim)
        U = (qa @ u)[..., :k]
        V = (qb @ numpy.swapaxes(vh, -1, -2))[..., :k]
        return U, s[..., :k], V

    @property
    def S(self):
        """The singular values [..., k], decreasing."""
        return self.svd()[1]

    def eig(self):
        """(values [..., r], vectors [..., m, r]) of a square AB from the small
        BA: if BA v = λv then AB (Av) = λ (Av), so the columns are A·v
        normalised to unit length (for λ ≠ 0; AB's other eigenvalues are 0).
        Sorted by decreasing modulus. Complex in general."""
        values, small = numpy.linalg.eig(self.BA)
        order = numpy.argsort(-numpy.abs(values), axis=-1, kind="stable")
        values = numpy.take_along_axis(values, order, axis=-1)
        small = numpy.take_along_axis(small, order[..., None, :], axis=-1)
        vectors = self.A @ small
        norms = numpy.linalg.norm(vectors, axis=-2, keepdims=True)
        return values, vectors / numpy.where(norms == 0, 1, norms)

    @property
    def eigenvalues(self):
        """The r eigenvalues of BA [..., r] (AB's non-zero ones, and zeros),
        by decreasing modulus."""
        return self.eig()[0]

    @property
    def eigenvectors(self):
        """AB's eigenvectors [..., m, r], column i for eigenvalues[i]."""
        return self.eig()[1]

    def norm(self):
        """The Frobenius norm ‖AB‖_F = √tr((AᵀA)(BBᵀ)) [...], from the r × r
        Gram matrices."""
        ata = numpy.swapaxes(self.A, -1, -2) @ self.A
        bbt = self.B @ numpy.swapaxes(self.B, -1, -2)
        return numpy.sqrt(numpy.maximum((ata * bbt).sum(axis=(-1, -2)), 0.0))

    # ---- out -------------------------------------------------------------------------

    def __array__(self, dtype=None, copy=None):
        check_materialise(self.shape, "the factored matrix")
        ab = self.AB
        return ab if dtype is None else ab.astype(dtype)

    def circuit(self):
        """This (two-dimensional) matrix as an :class:`mi.Circuit` (factors
        copied as float32), for libmi's streaming queries: top-k, rows,
        diagonal ranks of a vocabulary-sized circuit."""
        if self.ndim != 2:
            raise ValueError(f"circuit(): index the leading axes first ({list(self.shape)})")
        from .circuit import Circuit
        return Circuit.from_factors(self.A, self.B)
