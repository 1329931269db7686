"""Arrays in and out without requiring numpy: numpy when it is installed,
else the buffer protocol (array.array, memoryview) and nested lists."""

import array
import ctypes

import os

numpy = None
if not os.environ.get("MI_PYTHON_NO_NUMPY"):  # the tests use it to cover both paths
    try:
        import numpy
    except ImportError:  # numpy is optional
        numpy = None

from .enums import DTYPE_F32 as F32, DTYPE_F64 as F64
_TYPESTRS = {"<f4": F32, "<f8": F64}
_FORMATS = {"f": F32, "d": F64}
_ITEMSIZE = {F32: 4, F64: 8}


class InMatrix:
    """A caller matrix as libmi reads it: pointer, dtype, shape, row stride
    in elements. Holds a reference to the memory for the call's duration."""

    def __init__(self, obj, keep, address, dtype, rows, cols, row_stride):
        self.keep = (obj, keep)
        self.pointer = ctypes.c_void_p(address)
        self.dtype, self.rows, self.cols, self.row_stride = dtype, rows, cols, row_stride


def _shape2(shape):
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape
    raise ValueError(f"expected a vector or a matrix, got {len(shape)} dimensions")


def as_matrix(obj):
    """A 1-D or 2-D float32/float64 array-like as an InMatrix (no copy where
    the layout allows: C-contiguous rows, or numpy row strides)."""
    iface = getattr(obj, "__array_interface__", None)
    if iface is not None and iface.get("typestr") in _TYPESTRS and len(iface["shape"]) in (1, 2):
        dtype = _TYPESTRS[iface["typestr"]]
        item = _ITEMSIZE[dtype]
        rows, cols = _shape2(iface["shape"])
        strides = iface.get("strides")
        if strides is None:
            return InMatrix(obj, None, iface["data"][0], dtype, rows, cols, cols)
        col_stride = strides[-1]
        row_stride = strides[0] if len(strides) == 2 else cols * item
        if col_stride == item and row_stride % item == 0 and row_stride >= cols * item:
            return InMatrix(obj, None, iface["data"][0], dtype, rows, cols, row_stride // item)
    if numpy is not None and iface is not None:
        arr = numpy.ascontiguousarray(obj, dtype=numpy.float64)
        return as_matrix(arr)
    try:
        view = memoryview(obj)
    except TypeError:
        view = None
    if view is not None and view.format in _FORMATS and view.ndim in (1, 2):
        if not view.c_contiguous:
            view = memoryview(view.tobytes()).cast(view.format, view.shape)
        dtype = _FORMATS[view.format]
        rows, cols = _shape2(view.shape)
        if view.readonly:
            buf = (ctypes.c_char * view.nbytes).from_buffer_copy(view)
        else:
            buf = (ctypes.c_char * view.nbytes).from_buffer(view)
        return InMatrix(obj, (view, buf), ctypes.addressof(buf), dtype, rows, cols, cols)
    # Nested sequences of numbers.
    rows_list = list(obj)
    if rows_list and hasattr(rows_list[0], "__len__"):
        cols = len(rows_list[0])
        if any(len(r) != cols for r in rows_list):
            raise ValueError("rows of different lengths")
        flat = array.array("d", (float(x) for r in rows_list for x in r))
        return as_matrix(memoryview(flat).cast("B").cast("d", (len(rows_list), cols)))
    flat = array.array("d", (float(x) for x in rows_list))
    return as_matrix(flat)


class OutMatrix:
    """A rows × cols output buffer of float32 (or other ctypes type) that
    libmi fills; ``result()`` gives a numpy array, or nested lists without numpy."""

    def __init__(self, rows, cols, ctype=ctypes.c_float):
        self.rows, self.cols = rows, cols
        if numpy is not None:
            self.array = numpy.empty((rows, cols), dtype=_NUMPY_OF[ctype])
            self.pointer = self.array.ctypes.data_as(ctypes.POINTER(ctype))
        else:
            self.array = (ctype * max(rows * cols, 1))()
            self.pointer = ctypes.cast(self.array, ctypes.POINTER(ctype))

    def result(self, vector=False):
        if numpy is not None:
            return self.array[0] if vector else self.array
        flat = list(self.array)[: self.rows * self.cols]
        rows = [flat[i * self.cols:(i + 1) * self.cols] for i in range(self.rows)]
        return rows[0] if vector else rows


_NUMPY_OF = {}
if numpy is not None:
    _NUMPY_OF = {ctypes.c_float: numpy.float32, ctypes.c_double: numpy.float64,
                 ctypes.c_size_t: numpy.uintp, ctypes.c_int: numpy.intc}


def nest(flat, shape):
    """A flat list as nested lists of this shape (row-major)."""
    if len(shape) <= 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


class OutArray:
    """An n-dimensional C-ordered output buffer libmi fills: a numpy array
    (no copy afterwards), or nested lists without numpy."""

    def __init__(self, shape, ctype):
        self.shape = tuple(shape)
        count = 1
        for n in self.shape:
            count *= n
        self.count = count
        if numpy is not None:
            self.array = numpy.empty(self.shape, dtype=_NUMPY_OF[ctype])
            self.pointer = self.array.ctypes.data_as(ctypes.POINTER(ctype))
        else:
            self.array = (ctype * max(count, 1))()
            self.pointer = ctypes.cast(self.array, ctypes.POINTER(ctype))

    def result(self):
        if numpy is not None:
            return self.array
        return nest(self.array[:self.count], self.shape)


def size_vector(values):
    """Integers (token ids, positions) as a size_t array for one call: the
    pointer, the count and the object that owns the memory."""
    if numpy is not None and isinstance(values, numpy.ndarray):
        if values.dtype.kind not in "iu":
            raise TypeError(f"expected integers, got an array of {values.dtype}")
        if (values < 0).any():
            raise ValueError("negative token id or position")
        arr = numpy.ascontiguousarray(values.reshape(-1), dtype=numpy.uintp)
        return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_size_t)), arr.size, arr
    items = [int(v) for v in values]
    if any(v < 0 for v in items):
        raise ValueError("negative token id or position")
    arr = (ctypes.c_size_t * max(len(items), 1))(*items)
    return ctypes.cast(arr, ctypes.POINTER(ctypes.c_size_t)), len(items), arr


def float32_matrix(obj):
    """A matrix as float32 for libmi: (pointer, rows, cols, row stride, owner).
    float32 input with unit column stride is passed in place."""
    m = as_matrix(obj)
    if m.dtype == F32:
        return ctypes.cast(m.pointer, ctypes.POINTER(ctypes.c_float)), m.rows, m.cols, m.row_stride, m
    if numpy is not None:
        src = numpy.ctypeslib.as_array(ctypes.cast(m.pointer, ctypes.POINTER(ctypes.c_double)),
                                       shape=((m.rows - 1) * m.row_stride + m.cols,))
        arr = numpy.lib.stride_tricks.as_strided(src, shape=(m.rows, m.cols),
                                                 strides=(m.row_stride * 8, 8))
        arr = numpy.ascontiguousarray(arr, dtype=numpy.float32)
        return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), m.rows, m.cols, m.cols, arr
    src = ctypes.cast(m.pointer, ctypes.POINTER(ctypes.c_double))
    out = (ctypes.c_float * max(m.rows * m.cols, 1))()
    for i in range(m.rows):
        out[i * m.cols:(i + 1) * m.cols] = src[i * m.row_stride:i * m.row_stride + m.cols]
    return ctypes.cast(out, ctypes.POINTER(ctypes.c_float)), m.rows, m.cols, m.cols, out
