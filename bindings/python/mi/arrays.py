"""Arrays in and out, checked at the boundary.

The C API cannot know how long a caller's buffer is, so everything that
crosses into libmi goes through :func:`host_array` (floats) or
:func:`token_array` (ids) first: the shape, element type and layout are
read from the object, checked against what the call needs, and converted
(one vectorised copy) when libmi cannot read them in place. Nothing is ever
read past an object's memory.

Accepted: numpy arrays (any stride, either byte order), torch tensors (CPU;
through ``data_ptr``, never element by element, and without importing
torch), anything with the buffer protocol (``array.array``, ``memoryview``)
and nested lists. numpy is optional and torch is never imported unless a
caller asks for torch output (:func:`set_output`).
"""

import array
import ctypes
import numbers
import operator
import os
import sys

from .enums import DTYPE_BF16, DTYPE_F16, DTYPE_F32, DTYPE_F64

numpy = None
if not os.environ.get("MI_PYTHON_NO_NUMPY"):  # the tests use it to cover both paths
    try:
        import numpy
    except ImportError:  # numpy is optional
        numpy = None

SIZE_LIMIT = 1 << 64
_ITEMSIZE = {DTYPE_F32: 4, DTYPE_F64: 8, DTYPE_F16: 2, DTYPE_BF16: 2}
_TORCH_FLOATS = {"torch.float32": DTYPE_F32, "torch.float64": DTYPE_F64,
                 "torch.float16": DTYPE_F16, "torch.bfloat16": DTYPE_BF16}
_TORCH_INTS = {"torch.int64", "torch.int32", "torch.int16", "torch.int8", "torch.uint8",
               "torch.uint16", "torch.uint32", "torch.uint64"}
_BUFFER_FLOATS = {"f": DTYPE_F32, "d": DTYPE_F64, "e": DTYPE_F16}
_BUFFER_INTS = set("bBhHiIlLqQnN")
_LITTLE = sys.byteorder == "little"


# ---- output ------------------------------------------------------------------

_output = None  # None: numpy when installed, else lists


def set_output(kind) -> None:
    """What array results come back as, for every later call: ``"numpy"``,
    ``"torch"`` (CPU tensors sharing the numpy buffer; torch is imported
    then), ``"list"`` (nested lists) or None (the default: numpy when
    installed, else lists)."""
    global _output
    if kind not in (None, "numpy", "torch", "list"):
        raise ValueError(f"set_output: {kind!r} is not one of 'numpy', 'torch', 'list', None")
    if kind == "numpy" and numpy is None:
        raise ImportError("set_output('numpy'): numpy is not installed")
    if kind == "torch":
        import torch  # the caller asked for it: fail now, not at the first result
        del torch
    _output = kind


def get_output():
    """The kind :func:`set_output` set (None: the default)."""
    return _output


def result(arr):
    """A numpy array (or a ctypes buffer without numpy) as the caller wants it."""
    if _output == "torch":
        import torch
        return torch.from_numpy(arr) if numpy is not None else torch.tensor(arr)
    if _output == "list" and numpy is not None:
        return arr.tolist()
    return arr


def nest(flat, shape):
    """A flat list as nested lists of this shape (row-major)."""
    if len(shape) <= 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


_NUMPY_OF = {}
if numpy is not None:
    _NUMPY_OF = {ctypes.c_float: numpy.float32, ctypes.c_double: numpy.float64,
                 ctypes.c_size_t: numpy.uintp, ctypes.c_int: numpy.intc}


def product(shape):
    count = 1
    for n in shape:
        count *= n
    return count


class OutArray:
    """An n-dimensional C-ordered output buffer libmi fills: a numpy array
    (no copy afterwards), or nested lists without numpy. ``at(i)`` points
    at the i-th block of the leading axis."""

    def __init__(self, shape, ctype):
        self.shape = tuple(shape)
        self.ctype = ctype
        self.count = product(self.shape)
        if numpy is not None:
            self.array = numpy.empty(self.shape, dtype=_NUMPY_OF[ctype])
            self.address = self.array.ctypes.data
        else:
            self.array = (ctype * max(self.count, 1))()
            self.address = ctypes.addressof(self.array)
        self.pointer = ctypes.cast(self.address, ctypes.POINTER(ctype))

    def at(self, index):
        """Pointer to block ``index`` of the leading axis."""
        block = self.count // self.shape[0] if self.shape and self.shape[0] else 0
        return ctypes.cast(self.address + index * block * ctypes.sizeof(self.ctype),
                           ctypes.POINTER(self.ctype))

    def result(self):
        if numpy is not None:
            return result(self.array)
        flat = nest(self.array[:self.count], self.shape)
        return result(flat) if _output == "torch" else flat


# ---- input: floats -----------------------------------------------------------

class HostArray:
    """Floats in host memory libmi can read: ``address`` of element 0,
    ``shape``, ``strides`` in elements (each ≥ 0), mi ``dtype``. ``keep``
    holds whatever owns the memory for as long as this object lives."""

    def __init__(self, keep, address, shape, strides, dtype):
        self.keep, self.address = keep, address
        self.shape, self.strides, self.dtype = tuple(shape), tuple(strides), dtype
        self.itemsize = _ITEMSIZE[dtype]

    @property
    def ndim(self):
        return len(self.shape)

    def index(self, i):
        """The sub-array at index i of the leading axis (no copy)."""
        return HostArray(self.keep, self.address + i * self.strides[0] * self.itemsize,
                         self.shape[1:], self.strides[1:], self.dtype)

    def contiguous(self):
        """True when the elements are packed in C order."""
        step = 1
        for n, s in zip(reversed(self.shape), reversed(self.strides)):
            if n > 1 and s != step:
                return False
            step *= n
        return True

    def tobytes(self):
        """The elements in C order, packed."""
        if self.contiguous():
            return ctypes.string_at(self.address, product(self.shape) * self.itemsize)
        if self.ndim == 0:
            return ctypes.string_at(self.address, self.itemsize)
        return b"".join(self.index(i).tobytes() for i in range(self.shape[0]))

    def matrix(self, name, rows, cols, vector):
        """(address, row stride) of this array as libmi's rows × cols matrix
        (``vector``: a 1-D array of ``cols``), after checking the shape."""
        want = (cols,) if vector else (rows, cols)
        if self.shape != want:
            raise ValueError(f"{name}: expected shape {list(want)}, got {list(self.shape)}")
        col_stride = self.strides[-1] if self.shape[-1] > 1 else 1
        row_stride = self.strides[0] if not vector and rows > 1 else cols
        if col_stride != 1 or row_stride < cols:
            packed = _packed(self)
            return packed, packed.address, cols
        return self, self.address, row_stride


def _packed(a):
    """A C-contiguous copy of a HostArray."""
    data = a.tobytes()
    buf = (ctypes.c_char * max(len(data), 1)).from_buffer_copy(data or b"\0")
    strides, step = [], 1
    for n in reversed(a.shape):
        strides.insert(0, step)
        step *= n
    return HostArray(buf, ctypes.addressof(buf), a.shape, strides, a.dtype)


def is_tensor(obj):
    """A torch tensor, recognised without importing torch."""
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr")


def _torch_cpu(t, name):
    device = getattr(t, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        raise TypeError(f"{name}: a tensor on {device}; libmi reads host memory only: "
                        f"pass {name}.cpu() (the copy is yours to decide on)")
    t = t.detach()
    if t.is_conj() if hasattr(t, "is_conj") else False:
        t = t.resolve_conj()
    return t if t.is_contiguous() else t.contiguous()


def _from_tensor(t, name):
    t = _torch_cpu(t, name)
    kind = str(t.dtype)
    if kind in _TORCH_INTS:
        t = t.double()
        kind = "torch.float64"
    if kind not in _TORCH_FLOATS:
        raise TypeError(f"{name}: a tensor of {kind}; libmi reads float32, float64, "
                        "float16 and bfloat16 (or integers)")
    return HostArray(t, t.data_ptr(), tuple(t.shape), tuple(t.stride()), _TORCH_FLOATS[kind])


def _from_numpy(arr, name):
    kind = arr.dtype.kind
    if kind in "iu":
        arr = arr.astype(numpy.float64)
    elif kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"{name}: an array of {arr.dtype}; libmi reads float16, float32 and "
                        "float64 (or integers)")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    item = arr.itemsize
    # In place: C order, or rows apart with packed columns; else one copy.
    rows_apart = arr.ndim == 2 and arr.strides[1] == item and arr.strides[0] >= 0
    if any(s < 0 or s % item for s in arr.strides) or \
            not (arr.flags.c_contiguous or rows_apart):
        arr = numpy.ascontiguousarray(arr)
    dtype = {2: DTYPE_F16, 4: DTYPE_F32, 8: DTYPE_F64}[item]
    return HostArray(arr, arr.ctypes.data, arr.shape, [s // item for s in arr.strides], dtype)


def _from_buffer(view, name):
    fmt = view.format.lstrip("@=")
    swap = False
    if fmt[:1] in "<>!":
        swap = (fmt[0] == "<") != _LITTLE
        fmt = fmt[1:]
    if fmt in _BUFFER_INTS and not swap:
        return _from_nested(view.tolist(), name)
    if fmt not in _BUFFER_FLOATS or (swap and fmt == "e"):
        raise TypeError(f"{name}: a buffer of format {view.format!r}; libmi reads floats "
                        "('f', 'd', native 'e') or integers")
    shape = view.shape
    data = view.tobytes()  # C order, packed, whatever the strides were
    if swap:
        swapped = array.array(fmt, data)
        swapped.byteswap()
        data = swapped.tobytes()
    buf = (ctypes.c_char * max(len(data), 1)).from_buffer_copy(data or b"\0")
    strides, step = [], 1
    for n in reversed(shape):
        strides.insert(0, step)
        step *= n
    return HostArray(buf, ctypes.addressof(buf), shape, strides, _BUFFER_FLOATS[fmt])


def _is_sequence(x):
    return isinstance(x, (list, tuple)) or (hasattr(x, "__len__") and hasattr(x, "__getitem__")
                                            and not isinstance(x, (str, bytes, bytearray, dict)))


MAX_DIMS = 8


def nested_shape(obj, name):
    """The shape of nested sequences (first elements followed), at most
    MAX_DIMS deep."""
    shape, x = [], obj
    while _is_sequence(x) and not is_tensor(x) and not hasattr(x, "__array_interface__"):
        if len(shape) == MAX_DIMS:
            raise ValueError(f"{name}: nested more than {MAX_DIMS} deep")
        shape.append(len(x))
        if len(x) == 0:
            break
        x = x[0]
    return shape


def flatten(obj, shape, name, convert):
    """The leaves of nested sequences of exactly ``shape``, each through
    ``convert`` (which raises TypeError for a wrong type)."""
    out, level = [], [obj]
    for depth, n in enumerate(shape):
        nxt = []
        for item in level:
            if not _is_sequence(item) or isinstance(item, (str, bytes)):
                raise ValueError(f"{name}: ragged nesting, a {type(item).__name__} where a "
                                 f"sequence of {n} was expected at depth {depth}")
            if len(item) != n:
                raise ValueError(f"{name}: ragged nesting, a row of {len(item)} where "
                                 f"{n} were expected at depth {depth}")
            nxt.extend(item)
        level = nxt
    for leaf in level:
        if _is_sequence(leaf):
            raise ValueError(f"{name}: ragged nesting, a sequence where a number was expected")
        out.append(convert(leaf))
    return out


def _real(name):
    def convert(x):
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise TypeError(f"{name}: expected numbers, got a {type(x).__name__}")
        return float(x)
    return convert


def _from_nested(obj, name):
    if isinstance(obj, (str, bytes, bytearray, dict, set)) or obj is None:
        raise TypeError(f"{name}: expected an array of numbers, got a {type(obj).__name__}")
    if not _is_sequence(obj):
        if isinstance(obj, numbers.Real) and not isinstance(obj, bool):
            shape = []
        else:
            raise TypeError(f"{name}: expected an array of numbers, got a "
                            f"{type(obj).__name__}")
    else:
        shape = nested_shape(obj, name)
    flat = array.array("d", flatten(obj, shape, name, _real(name)) if shape
                       else [_real(name)(obj)])
    strides, step = [], 1
    for n in reversed(shape):
        strides.insert(0, step)
        step *= n
    address = flat.buffer_info()[0]
    return HostArray(flat, address, shape, strides, DTYPE_F64)


def host_array(obj, name):
    """Any array-like of floats as a :class:`HostArray` (see the module
    docstring for what is accepted). TypeError names ``name`` for a wrong
    type; ValueError for ragged nesting."""
    if isinstance(obj, HostArray):
        return obj
    if is_tensor(obj):
        return _from_tensor(obj, name)
    if numpy is not None and (isinstance(obj, numpy.ndarray) or
                              hasattr(obj, "__array_interface__")):
        return _from_numpy(numpy.asarray(obj), name)
    if not isinstance(obj, (str, bytes, bytearray)):
        try:
            view = memoryview(obj)
        except TypeError:
            view = None
        if view is not None:
            return _from_buffer(view, name)
    return _from_nested(obj, name)


# ---- input: integers ---------------------------------------------------------

def _integer(value, what):
    """operator.index(value), refusing bool and non-integers (TypeError)."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}") from None


def index(value, count, what):
    """An index into ``count`` things: an int (negative counts from the
    end); TypeError for a non-integer, IndexError out of range."""
    i = _integer(value, what)
    j = i + count if i < 0 else i
    if not 0 <= j < count:
        raise IndexError(f"{what} {i} out of range ({count})")
    return j


def size(value, what):
    """A count or size for a size_t: an int in [0, 2**64); TypeError,
    ValueError (negative) or OverflowError."""
    n = _integer(value, what)
    if n < 0:
        raise ValueError(f"{what} must be ≥ 0, got {n}")
    if n >= SIZE_LIMIT:
        raise OverflowError(f"{what} {n} does not fit a size_t")
    return n


def span(start, stop, count, what):
    """(start, stop) of a non-empty range of ``count`` lines, as a slice
    reads them (negative counts from the end; stop None: to the end);
    TypeError for non-integers, IndexError for an empty or outside range."""
    start = 0 if start is None else start
    for value in (start, stop):
        if value is not None and (isinstance(value, bool) or not hasattr(value, "__index__")):
            raise TypeError(f"{what}: bounds must be integers, not {type(value).__name__}")
    i0 = operator.index(start)
    i1 = count if stop is None else operator.index(stop)
    i0 += count if i0 < 0 else 0
    i1 += count if i1 < 0 else 0
    if not 0 <= i0 < i1 <= count:
        raise IndexError(f"{what}: [{start}, {stop}) is empty or outside [0, {count})")
    return i0, i1


#: Elements np.asarray(circuit) materialises at most (2**26: 256 MiB of
#: float32); a larger circuit is refused, naming its size.
MATERIALISE_LIMIT = 1 << 26


def check_materialise(shape, what):
    count = product(shape)
    if count > MATERIALISE_LIMIT:
        raise ValueError(f"{what} {' x '.join(map(str, shape))} has {count:,} entries, more "
                         f"than mi.arrays.MATERIALISE_LIMIT ({MATERIALISE_LIMIT:,}): use its "
                         "streaming queries (topk, rows, ...) or raise the limit")


class SizeArray:
    """Integers as a C size_t array for one call: ``pointer``, ``shape``,
    and the owner of the memory. ``at(i)``: pointer to row i."""

    def __init__(self, values, shape):
        self.shape = tuple(shape)
        self.count = product(self.shape)
        if numpy is not None:
            self.array = numpy.ascontiguousarray(values, dtype=numpy.uintp).reshape(-1)
            self.address = self.array.ctypes.data
        else:
            self.array = (ctypes.c_size_t * max(self.count, 1))(*values)
            self.address = ctypes.addressof(self.array)
        self.pointer = ctypes.cast(self.address, ctypes.POINTER(ctypes.c_size_t))

    def at(self, i):
        row = self.shape[-1] if self.shape else 1
        return ctypes.cast(self.address + i * row * ctypes.sizeof(ctypes.c_size_t),
                           ctypes.POINTER(ctypes.c_size_t))

    def tolist(self):
        return [int(v) for v in self.array[:self.count]]


def _int(name):
    return lambda x: _integer(x, f"{name}: expected integers; an element")


def int_array(obj, name, limit, wrap=False, ndims=(1, 2)):
    """Integers as a :class:`SizeArray`, each checked to lie in [0, limit)
    (``wrap``: negative ones count from the end) before anything is
    converted to size_t, so 2**64 + 5 is an IndexError, never 5. ``ndims``:
    the ranks allowed."""
    if is_tensor(obj):
        t = _torch_cpu(obj, name)
        if str(t.dtype) not in _TORCH_INTS:
            raise TypeError(f"{name}: expected integers, got a tensor of {t.dtype}")
        obj = t.numpy() if numpy is not None else t.tolist()
    if numpy is not None and (isinstance(obj, numpy.ndarray) or
                              hasattr(obj, "__array_interface__")):
        arr = numpy.asarray(obj)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integers, got an array of {arr.dtype}")
        shape = arr.shape
        if arr.size:
            low, high = int(arr.min()), int(arr.max())
            if wrap and low < 0:
                arr = numpy.where(arr < 0, arr.astype(numpy.int64) + limit, arr)
                low = int(arr.min())
            if low < 0 or high >= limit:
                bad = low if low < 0 else high
                raise IndexError(f"{name}: {bad} out of range [0, {limit})")
        values = arr
    else:
        if isinstance(obj, (str, bytes, bytearray, dict, set)) or obj is None:
            raise TypeError(f"{name}: expected integers, got a {type(obj).__name__}")
        if not _is_sequence(obj) and not isinstance(obj, memoryview):
            raise TypeError(f"{name}: expected a sequence of integers, got a "
                            f"{type(obj).__name__}")
        if isinstance(obj, memoryview):
            obj = obj.tolist()
        shape = tuple(nested_shape(obj, name))
        values = flatten(obj, shape, name, _int(name))
        for k, v in enumerate(values):
            if wrap and v < 0:
                v = values[k] = v + limit
            if not 0 <= v < limit:
                raise IndexError(f"{name}: {values[k] if not wrap else v} out of range "
                                 f"[0, {limit})")
    if len(shape) not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in ndims)} integers, "
                         f"got shape {list(shape)}")
    return SizeArray(values, shape)


def float32_matrix(obj, name="matrix"):
    """A 2-D array as float32 for libmi: (pointer, rows, cols, row stride,
    owner). float32 with unit column stride is passed in place."""
    a = host_array(obj, name)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a matrix, got shape {list(a.shape)}")
    rows, cols = a.shape
    if a.dtype == DTYPE_F32 and (a.strides[1] == 1 or cols == 1) and \
            (a.strides[0] >= cols or rows == 1):
        ld = a.strides[0] if rows > 1 else cols
        return ctypes.cast(a.address, ctypes.POINTER(ctypes.c_float)), rows, cols, ld, a
    if numpy is not None:
        arr = to_numpy(a).astype(numpy.float32)
        return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), rows, cols, cols, arr
    doubles = array.array("d", a.tobytes()) if a.dtype == DTYPE_F64 else None
    if doubles is None:
        raise TypeError(f"{name}: float16 and bfloat16 factors need numpy")
    out = (ctypes.c_float * max(rows * cols, 1))(*doubles)
    return ctypes.cast(out, ctypes.POINTER(ctypes.c_float)), rows, cols, cols, out


def to_numpy(a):
    """A HostArray as a numpy array (float32/float64; float16 and bfloat16
    widened to float32). Needs numpy."""
    data = a.tobytes()
    if a.dtype == DTYPE_BF16:
        bits = numpy.frombuffer(data, dtype=numpy.uint16).astype(numpy.uint32) << 16
        return bits.view(numpy.float32).reshape(a.shape)
    kind = {DTYPE_F32: numpy.float32, DTYPE_F64: numpy.float64, DTYPE_F16: numpy.float16}
    arr = numpy.frombuffer(data, dtype=kind[a.dtype]).reshape(a.shape)
    return arr.astype(numpy.float32) if a.dtype == DTYPE_F16 else arr.copy()
