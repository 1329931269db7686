"""Sweep results files (mi sweep) and the per-unit row summary, from Python."""

import ctypes

from . import _native
from ._arrays import numpy
from ._native import lib

_FORMATS = {"I32": "i", "F32": "f", "F64": "d"}
#: The metadata keys libmi writes (mi_sweep_metadata).
METADATA_KEYS = ("format", "libmi_version", "model_digest", "model_shape", "options",
                 "heads", "k_composition", "unit")


def load_sweep(path):
    """Every tensor of a results (or unit) file, by name, plus its metadata
    under "__metadata__" (a dict of strings). Tensors are numpy arrays with
    their shape when numpy is there, else memoryviews cast to that shape
    (index them as view[i, j], or .tolist())."""
    handle = ctypes.c_void_p()
    lib.mi_sweep_open(ctypes.byref(handle), str(path).encode())
    try:
        out = {}
        for i in range(lib.mi_sweep_tensor_count(handle)):
            t = _native.SweepTensor()
            t.struct_size = ctypes.sizeof(t)
            lib.mi_sweep_tensor_at(ctypes.byref(t), handle, i)
            shape = [t.shape[d] for d in range(t.ndim)]
            blob = ctypes.string_at(t.data, t.nbytes) if t.nbytes else b""
            fmt = _FORMATS[t.dtype.decode()]
            if numpy is not None:
                out[t.name.decode()] = numpy.frombuffer(blob, dtype=fmt).reshape(shape).copy()
            else:
                out[t.name.decode()] = memoryview(blob).cast("B").cast(fmt, shape)
        meta = {}
        for key in METADATA_KEYS:
            value = ctypes.c_char_p()
            if lib.mi_sweep_metadata(ctypes.byref(value), handle, key.encode()) == 0:
                meta[key] = value.value.decode()
        out["__metadata__"] = meta
        return out
    finally:
        lib.mi_sweep_free(handle)


def _buffer(ctype, count):
    return (ctype * max(count, 1))()


def row_summary(circuit, i0, i1, k=10, k_columns=0, k_row_z=0, k_col_z=0, diag=True):
    """mi_circuit_row_summary of rows i0..i1 - 1: a dict of flat lists
    ("topk_index", "topk_value", "diag_rank", "row_mean", "row_std", and
    "col_index"/"col_value", "row_z_index"/"row_z", "col_z_index"/"col_z"
    when asked). Unfilled ranks hold index SIZE_MAX and value -inf."""
    rows = i1 - i0
    m = circuit.shape[1]
    s = _native.RowSummary()
    s.struct_size = ctypes.sizeof(s)
    bufs = {}

    def want(name, ctype, count):
        bufs[name] = _buffer(ctype, count)
        return ctypes.cast(bufs[name], ctypes.c_void_p)

    size_t, f32, f64 = ctypes.c_size_t, ctypes.c_float, ctypes.c_double
    s.k = k
    if k:
        s.topk_index, s.topk_value = want("topk_index", size_t, rows * k), want("topk_value", f32, rows * k)
    if diag:
        s.diag_rank = want("diag_rank", size_t, rows)
    s.row_mean, s.row_std = want("row_mean", f64, rows), want("row_std", f64, rows)
    s.k_columns = k_columns
    if k_columns:
        s.col_index, s.col_value = want("col_index", size_t, m * k_columns), want("col_value", f32, m * k_columns)
    s.k_row_z = k_row_z
    if k_row_z:
        s.row_z_index, s.row_z = want("row_z_index", size_t, rows * k_row_z), want("row_z", f64, rows * k_row_z)
    s.k_col_z = k_col_z
    if k_col_z:
        s.col_z_index, s.col_z = want("col_z_index", size_t, m * k_col_z), want("col_z", f64, m * k_col_z)
    lib.mi_circuit_row_summary(ctypes.byref(s), circuit._h(), i0, i1)
    return {name: list(buf) for name, buf in bufs.items()}
