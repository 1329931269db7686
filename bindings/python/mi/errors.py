"""libmi's statuses as Python exceptions. Every failure of a libmi call is an
:class:`MiError`; each status has its own subclass, which is also the
built-in exception a Python user would expect (``except IndexError`` catches
a layer out of range), as pygit2 does."""

from .enums import STATUS


class MiError(Exception):
    """A libmi call failed. ``status`` is the mi_status value, ``name`` its
    text (mi_status_str) and the message is mi_last_error() of that call."""

    def __init__(self, status, name, detail):
        super().__init__(f"{name}: {detail}" if detail else name)
        self.status = status
        self.name = name
        self.detail = detail


class MiInvalidArgumentError(MiError, ValueError):
    """MI_ERR_INVALID_ARGUMENT: an argument libmi cannot use."""


class MiOutOfMemoryError(MiError, MemoryError):
    """MI_ERR_OUT_OF_MEMORY: an allocation failed or a size would overflow."""


class MiIOError(MiError, OSError):
    """MI_ERR_IO: the operating system refused a file operation."""


class MiFormatError(MiError, ValueError):
    """MI_ERR_FORMAT: a file is not in the format it claims."""


class MiShapeError(MiError, ValueError):
    """MI_ERR_SHAPE: shapes disagree."""


class MiUnsupportedError(MiError, NotImplementedError):
    """MI_ERR_UNSUPPORTED: well-formed, but not something libmi does."""


class MiIndexError(MiError, IndexError):
    """MI_ERR_INDEX: a layer, head, token or row out of range."""


class MiDtypeError(MiError, TypeError):
    """MI_ERR_DTYPE: a tensor's element type is not allowed there."""


class MiMissingTensorError(MiError, KeyError):
    """MI_ERR_MISSING_TENSOR: a tensor the model needs is missing."""

    __str__ = Exception.__str__  # KeyError would quote the message


class MiTruncatedError(MiError, ValueError):
    """MI_ERR_TRUNCATED: a file is shorter than its header says."""


class MiStateError(MiError, RuntimeError):
    """MI_ERR_STATE: the object's state does not allow the call."""


class MiNumericError(MiError, ArithmeticError):
    """MI_ERR_NUMERIC: a LAPACK routine failed."""


class MiNonFiniteError(MiError, ValueError):
    """MI_ERR_NONFINITE: a weight or factor is NaN or infinite."""


_CLASSES = {STATUS["invalid_argument"]: MiInvalidArgumentError,
            STATUS["out_of_memory"]: MiOutOfMemoryError, STATUS["io"]: MiIOError,
            STATUS["format"]: MiFormatError, STATUS["shape"]: MiShapeError,
            STATUS["unsupported"]: MiUnsupportedError, STATUS["index"]: MiIndexError,
            STATUS["dtype"]: MiDtypeError, STATUS["missing_tensor"]: MiMissingTensorError,
            STATUS["truncated"]: MiTruncatedError, STATUS["state"]: MiStateError,
            STATUS["numeric"]: MiNumericError, STATUS["nonfinite"]: MiNonFiniteError}


def error_for(status: int, name: str, detail: str) -> MiError:
    """The exception for a failed call: the status's own class (MiError for
    a status these bindings do not know yet)."""
    return _CLASSES.get(status, MiError)(status, name, detail)
