"""Loading libmi and declaring its C prototypes (one table, checked at import)."""

import ctypes
import ctypes.util
import os

SONAME = "libmi.so.0"
ABI_MAJOR = 0


class MiError(Exception):
    """A libmi call failed. ``status`` is the mi_status value, ``name`` its
    text (mi_status_str) and the message is mi_last_error() of that call."""

    def __init__(self, status, name, detail):
        super().__init__(f"{name}: {detail}" if detail else name)
        self.status = status
        self.name = name
        self.detail = detail


def _find_library():
    """MI_LIBRARY, then a copy next to this package, then the system loader."""
    candidates = []
    if os.environ.get("MI_LIBRARY"):
        candidates.append(os.environ["MI_LIBRARY"])
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, SONAME))
    found = ctypes.util.find_library("mi")
    candidates.append(found if found else SONAME)
    errors = []
    for path in candidates:
        if os.sep in path and not os.path.exists(path):
            errors.append(f"{path}: no such file")
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            errors.append(str(e))
    raise ImportError("cannot load libmi (set MI_LIBRARY to libmi.so.0): " + "; ".join(errors))


lib = _find_library()

c_size_p = ctypes.POINTER(ctypes.c_size_t)
c_float_p = ctypes.POINTER(ctypes.c_float)
c_double_p = ctypes.POINTER(ctypes.c_double)


class Config(ctypes.Structure):
    """mi_config."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("n_layers", ctypes.c_size_t),
        ("n_heads", ctypes.c_size_t),
        ("n_kv_heads", ctypes.c_size_t),
        ("d_model", ctypes.c_size_t),
        ("d_head", ctypes.c_size_t),
        ("d_vocab", ctypes.c_size_t),
        ("n_ctx", ctypes.c_size_t),
        ("parts", ctypes.c_uint),
        ("ln_eps", ctypes.c_double),
    ]


def _check_status(status, func, args):
    """errcheck: a non-ok status becomes MiError with this thread's detail."""
    if status != 0:
        name = lib.mi_status_str(status).decode()
        detail = lib.mi_last_error().decode(errors="replace")
        raise MiError(status, name, detail)
    return status


_STATUS = ctypes.c_int
_void_p = ctypes.c_void_p

# name, argtypes, restype, checked (restype is mi_status and raises on failure)
PROTOTYPES = [
    ("mi_version", [], ctypes.c_uint, False),
    ("mi_version_string", [], ctypes.c_char_p, False),
    ("mi_status_str", [ctypes.c_int], ctypes.c_char_p, False),
    ("mi_last_error", [], ctypes.c_char_p, False),
    ("mi_config_init", [ctypes.POINTER(Config)], None, False),
    ("mi_model_create", [ctypes.POINTER(_void_p), ctypes.POINTER(Config)], _STATUS, True),
    ("mi_model_free", [_void_p], None, False),
    ("mi_model_set_weight", [_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t,
                             ctypes.c_int, _void_p, ctypes.c_size_t], _STATUS, True),
    ("mi_model_process", [_void_p, ctypes.c_uint], _STATUS, True),
    ("mi_model_processing", [_void_p], ctypes.c_uint, False),
    ("mi_model_layout", [_void_p], ctypes.c_int, False),
    ("mi_model_get_config", [ctypes.POINTER(Config), _void_p], _STATUS, True),
    ("mi_model_weight_shape", [c_size_p, c_size_p, _void_p, ctypes.c_int], _STATUS, True),
    ("mi_model_get_weight", [c_float_p, ctypes.c_size_t, _void_p, ctypes.c_int,
                             ctypes.c_size_t, ctypes.c_size_t], _STATUS, True),
]


def _register(prototypes):
    for name, argtypes, restype, checked in prototypes:
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise ImportError(f"libmi at {lib._name} lacks {name}: "
                              "the library is older than these bindings") from None
        fn.argtypes = argtypes
        fn.restype = restype
        if checked:
            fn.errcheck = _check_status


_register(PROTOTYPES)
if lib.mi_version() // 10000 != ABI_MAJOR:
    raise ImportError(f"libmi {lib.mi_version_string().decode()} has ABI major "
                      f"{lib.mi_version() // 10000}; these bindings need {ABI_MAJOR}")
