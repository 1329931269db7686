"""Loading libmi and declaring its C prototypes (one table, checked at import)."""

import ctypes
import ctypes.util
import os

from .errors import MiError, error_for  # noqa: F401 (MiError: older imports)

SONAME = "libmi.so.0"
ABI_MAJOR = 0


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
        ("positional", ctypes.c_int),
    ]


class LoadOptions(ctypes.Structure):
    """mi_load_options."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("n_heads", ctypes.c_size_t),
        ("process", ctypes.c_uint),
        ("positional", ctypes.c_int),
        ("flags", ctypes.c_uint),
    ]


class EigenSummary(ctypes.Structure):
    """mi_eigen_summary."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("copying_score", ctypes.c_double),
        ("positive_real_fraction", ctypes.c_double),
        ("nonzero", ctypes.c_size_t),
    ]


class HeadReport(ctypes.Structure):
    """mi_head_report."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("layer", ctypes.c_size_t),
        ("head", ctypes.c_size_t),
        ("ov", EigenSummary),
        ("qk", EigenSummary),
        ("prev_token_share", ctypes.c_double),
        ("prev_token_attention", ctypes.c_double),
        ("duplicate_token_attention", ctypes.c_double),
        ("induction_attention", ctypes.c_double),
    ]


class ReportOptions(ctypes.Structure):
    """mi_report_options."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("qk_flags", ctypes.c_uint),
        ("prev_token", ctypes.c_int),
        ("behaviour_sequences", ctypes.c_size_t),
        ("behaviour_half_length", ctypes.c_size_t),
        ("behaviour_seed", ctypes.c_uint64),
    ]


class ForwardExtras(ctypes.Structure):
    """mi_forward_extras."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("patterns", c_float_p),
        ("patterns_count", ctypes.c_size_t),
        ("resid", c_float_p),
        ("resid_count", ctypes.c_size_t),
        ("head_scale", c_float_p),
        ("head_scale_count", ctypes.c_size_t),
        ("head_bias", c_float_p),
        ("head_bias_count", ctypes.c_size_t),
        ("head_out", c_float_p),
        ("head_out_count", ctypes.c_size_t),
    ]


class AttributionPart(ctypes.Structure):
    """mi_attribution_part (filled by libmi; every pointer borrowed)."""
    _fields_ = [
        ("source", ctypes.c_int),
        ("source_layer", ctypes.c_size_t),
        ("order", ctypes.c_size_t),
        ("layers", c_size_p),
        ("heads", c_size_p),
        ("n_positions", ctypes.c_size_t),
        ("positions", c_size_p),
        ("logits", c_float_p),
        ("token_logit", c_double_p),
        ("logit_diff", c_double_p),
    ]


class AttributionOptions(ctypes.Structure):
    """mi_attribution_options."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("max_order", ctypes.c_size_t),
        ("positions", c_size_p),
        ("n_positions", ctypes.c_size_t),
        ("logit_tokens", c_size_p),
        ("diff_tokens", c_size_p),
        ("flags", ctypes.c_uint),
    ]


class Path(ctypes.Structure):
    """mi_path (filled by libmi; every pointer borrowed)."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("order", ctypes.c_size_t),
        ("layers", c_size_p),
        ("heads", c_size_p),
        ("norm", ctypes.c_double),
        ("circuit", ctypes.c_void_p),
    ]


ATTRIBUTION_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(AttributionPart), ctypes.c_void_p)
PATH_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(Path), ctypes.c_void_p)
PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p)


class SkipTrigram(ctypes.Structure):
    """mi_skip_trigram."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("layer", ctypes.c_size_t),
        ("head", ctypes.c_size_t),
        ("src", ctypes.c_size_t),
        ("dst", ctypes.c_size_t),
        ("out", ctypes.c_size_t),
        ("qk_z", ctypes.c_double),
        ("ov_z", ctypes.c_double),
        ("score", ctypes.c_double),
    ]


class SkipTrigramOptions(ctypes.Structure):
    """mi_skip_trigram_options."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("qk_flags", ctypes.c_uint),
        ("outputs_per_source", ctypes.c_size_t),
        ("destinations_per_source", ctypes.c_size_t),
        ("progress", PROGRESS_FN),
        ("progress_user", ctypes.c_void_p),
        ("ov_top1", c_double_p),
        ("ov_top5", c_double_p),
        ("ov_accuracy_count", ctypes.c_size_t),
    ]


# Head roles and the HTML report
class RoleOptions(ctypes.Structure):
    """mi_role_options."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("report", ctypes.POINTER(ReportOptions)),
        ("min_attention", ctypes.c_double),
        ("min_attention_lift", ctypes.c_double),
        ("min_prev_share_lift", ctypes.c_double),
        ("min_copying_score", ctypes.c_double),
        ("min_copying_lift", ctypes.c_double),
        ("min_k_composition_z", ctypes.c_double),
        ("ov_top1", c_double_p),
        ("ov_top1_count", ctypes.c_size_t),
    ]


class HeadRoles(ctypes.Structure):
    """mi_head_roles."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("layer", ctypes.c_size_t),
        ("head", ctypes.c_size_t),
        ("role", ctypes.c_int),
        ("passed", ctypes.c_uint),
        ("ov_copying_score", ctypes.c_double),
        ("ov_top1", ctypes.c_double),
        ("ov_top1_chance", ctypes.c_double),
        ("qk_same_token", ctypes.c_double),
        ("prev_token_share", ctypes.c_double),
        ("prev_token_share_chance", ctypes.c_double),
        ("prev_token_attention", ctypes.c_double),
        ("prev_token_uniform", ctypes.c_double),
        ("duplicate_token_attention", ctypes.c_double),
        ("duplicate_token_uniform", ctypes.c_double),
        ("induction_attention", ctypes.c_double),
        ("induction_uniform", ctypes.c_double),
        ("k_layer", ctypes.c_size_t),
        ("k_head", ctypes.c_size_t),
        ("k_score", ctypes.c_double),
        ("k_z", ctypes.c_double),
        ("k_chance", ctypes.c_double),
        ("k_chance_sd", ctypes.c_double),
        ("k_partners", ctypes.c_size_t),
    ]


class RolePartner(ctypes.Structure):
    """mi_role_partner."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("reader", ctypes.c_size_t),
        ("layer", ctypes.c_size_t),
        ("head", ctypes.c_size_t),
        ("score", ctypes.c_double),
        ("z", ctypes.c_double),
    ]


class HtmlOptions(ctypes.Structure):
    """mi_html_options."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("tokens", ctypes.POINTER(ctypes.c_size_t)),
        ("n_tokens", ctypes.c_size_t),
        ("trigrams", ctypes.c_size_t),
        ("max_order", ctypes.c_size_t),
        ("top_parts", ctypes.c_size_t),
        ("roles", ctypes.POINTER(RoleOptions)),
        ("title", ctypes.c_char_p),
    ]


WRITE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
class RowSummary(ctypes.Structure):
    """mi_row_summary."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("k", ctypes.c_size_t),
        ("topk_index", ctypes.c_void_p),
        ("topk_value", ctypes.c_void_p),
        ("diag_rank", ctypes.c_void_p),
        ("row_mean", ctypes.c_void_p),
        ("row_std", ctypes.c_void_p),
        ("k_columns", ctypes.c_size_t),
        ("col_index", ctypes.c_void_p),
        ("col_value", ctypes.c_void_p),
        ("k_row_z", ctypes.c_size_t),
        ("row_z_index", ctypes.c_void_p),
        ("row_z", ctypes.c_void_p),
        ("k_col_z", ctypes.c_size_t),
        ("col_z_index", ctypes.c_void_p),
        ("col_z", ctypes.c_void_p),
    ]


class SweepOptions(ctypes.Structure):
    """mi_sweep_options."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("circuits", ctypes.c_uint),
        ("qk_flags", ctypes.c_uint),
        ("k", ctypes.c_size_t),
        ("k_columns", ctypes.c_size_t),
        ("outputs_per_source", ctypes.c_size_t),
        ("destinations_per_source", ctypes.c_size_t),
        ("trigrams", ctypes.c_size_t),
        ("unit_rows", ctypes.c_size_t),
    ]


class SweepTensor(ctypes.Structure):
    """mi_sweep_tensor."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_char_p),
        ("item", ctypes.c_size_t),
        ("ndim", ctypes.c_size_t),
        ("shape", ctypes.POINTER(ctypes.c_size_t)),
        ("data", ctypes.c_void_p),
        ("nbytes", ctypes.c_size_t),
    ]


SIZE_MAX = ctypes.c_size_t(-1).value


def _check_status(status, func, args):
    """errcheck: a non-ok status becomes MiError with this thread's detail."""
    if status != 0:
        name = lib.mi_status_str(status).decode()
        detail = lib.mi_last_error().decode(errors="replace")
        raise error_for(status, name, detail)
    return status


_STATUS = ctypes.c_int


class _Size(ctypes.c_size_t):
    """A size_t argument. ctypes would wrap a negative int modulo 2**64, so C
    would fill a huge count into a buffer Python sized from the raw value:
    refuse anything outside [0, 2**64) before the call instead. (The public
    methods check their integers first, so this is the last line only.)"""

    @classmethod
    def from_param(cls, value):
        if isinstance(value, int) and not 0 <= value < 1 << 64:
            raise OverflowError(f"{value} is not a valid size (0 <= n < 2**64)")
        return ctypes.c_size_t.from_param(value)

_void_p = ctypes.c_void_p

# name, argtypes, restype, checked (restype is mi_status and raises on failure)
PROTOTYPES = [
    ("mi_version", [], ctypes.c_uint, False),
    ("mi_version_string", [], ctypes.c_char_p, False),
    ("mi_status_str", [ctypes.c_int], ctypes.c_char_p, False),
    ("mi_last_error", [], ctypes.c_char_p, False),
    ("mi_config_init", [ctypes.POINTER(Config), _Size], None, False),
    ("mi_model_create", [ctypes.POINTER(_void_p), ctypes.POINTER(Config)], _STATUS, True),
    ("mi_model_free", [_void_p], None, False),
    ("mi_model_copy", [ctypes.POINTER(_void_p), _void_p], _STATUS, True),
    ("mi_model_set_weight", [_void_p, ctypes.c_int, _Size, _Size,
                             ctypes.c_int, _void_p, _Size], _STATUS, True),
    ("mi_model_process", [_void_p, ctypes.c_uint], _STATUS, True),
    ("mi_model_processing", [_void_p], ctypes.c_uint, False),
    ("mi_model_layout", [_void_p], ctypes.c_int, False),
    ("mi_model_get_config", [ctypes.POINTER(Config), _void_p], _STATUS, True),
    ("mi_model_weight_shape", [c_size_p, c_size_p, _void_p, ctypes.c_int], _STATUS, True),
    ("mi_model_get_weight", [c_float_p, _Size, _void_p, ctypes.c_int,
                             _Size, _Size], _STATUS, True),
    ("mi_load_options_init", [ctypes.POINTER(LoadOptions), _Size], None, False),
    ("mi_model_load", [ctypes.POINTER(_void_p), ctypes.c_char_p,
                       ctypes.POINTER(LoadOptions)], _STATUS, True),
    ("mi_model_load_memory", [ctypes.POINTER(_void_p), _void_p, _Size,
                              ctypes.POINTER(LoadOptions)], _STATUS, True),
    ("mi_model_load_vocab", [_void_p, ctypes.c_char_p], _STATUS, True),
    ("mi_model_token_bytes", [ctypes.POINTER(ctypes.c_void_p), c_size_p, _void_p,
                              _Size], _STATUS, True),
    ("mi_model_token_id", [c_size_p, _void_p, ctypes.c_char_p], _STATUS, True),
    ("mi_model_load_vocab_memory", [_void_p, ctypes.c_char_p, _Size], _STATUS, True),
    ("mi_model_token_str", [ctypes.POINTER(ctypes.c_char_p), _void_p, _Size],
     _STATUS, True),
    # Tokenizer
    ("mi_tokenizer_load", [ctypes.POINTER(_void_p), ctypes.c_char_p, ctypes.c_char_p],
     _STATUS, True),
    ("mi_tokenizer_load_memory", [ctypes.POINTER(_void_p), ctypes.c_char_p, _Size,
                                  ctypes.c_char_p, _Size], _STATUS, True),
    ("mi_tokenizer_free", [_void_p], None, False),
    ("mi_tokenizer_encode", [c_size_p, _Size, c_size_p, _void_p, ctypes.c_char_p, _Size,
                             ctypes.c_uint], _STATUS, True),
    ("mi_tokenizer_token_bytes", [ctypes.POINTER(ctypes.c_void_p), c_size_p, _void_p, _Size],
     _STATUS, True),
    ("mi_tokenizer_bos", [c_size_p, _void_p], _STATUS, True),
    ("mi_tokenizer_vocab_size", [c_size_p, _void_p], _STATUS, True),
    ("mi_model_load_tokenizer", [_void_p, ctypes.c_char_p, ctypes.c_char_p], _STATUS, True),
    ("mi_model_load_tokenizer_memory", [_void_p, ctypes.c_char_p, _Size, ctypes.c_char_p,
                                        _Size], _STATUS, True),
    ("mi_model_tokenizer", [ctypes.POINTER(_void_p), _void_p], _STATUS, True),
    # BLIS kernels and threads
    ("mi_blis_select_fast_kernels", [], _STATUS, True),
    ("mi_blis_kernel_set", [ctypes.POINTER(ctypes.c_char_p)], _STATUS, True),
    ("mi_set_num_threads", [_Size], _STATUS, True),
    ("mi_get_num_threads", [], ctypes.c_size_t, False),
    # Circuits
    ("mi_circuit_qk", [ctypes.POINTER(_void_p), _void_p, _Size, _Size,
                       ctypes.c_int, ctypes.c_int, ctypes.c_uint], _STATUS, True),
    ("mi_circuit_ov", [ctypes.POINTER(_void_p), _void_p, _Size, _Size],
     _STATUS, True),
    ("mi_circuit_direct", [ctypes.POINTER(_void_p), _void_p], _STATUS, True),
    ("mi_circuit_from_factors", [ctypes.POINTER(_void_p), _Size, _Size,
                                 _Size, c_float_p, _Size, c_float_p,
                                 _Size], _STATUS, True),
    ("mi_circuit_transpose", [ctypes.POINTER(_void_p), _void_p], _STATUS, True),
    ("mi_circuit_compose", [ctypes.POINTER(_void_p), _void_p, _void_p], _STATUS, True),
    ("mi_circuit_free", [_void_p], None, False),
    ("mi_circuit_shape", [c_size_p, c_size_p, c_size_p, _void_p], _STATUS, True),
    ("mi_circuit_entry", [c_double_p, _void_p, _Size, _Size], _STATUS, True),
    ("mi_circuit_rows", [c_float_p, _Size, _void_p, _Size, _Size],
     _STATUS, True),
    ("mi_circuit_cols", [c_float_p, _Size, _void_p, _Size, _Size],
     _STATUS, True),
    ("mi_circuit_dense", [c_float_p, _Size, _void_p], _STATUS, True),
    ("mi_circuit_topk", [c_size_p, c_float_p, _Size, _void_p, _Size,
                         ctypes.c_uint, _Size, _Size], _STATUS, True),
    ("mi_circuit_row_stats", [c_double_p, c_double_p, _void_p, _Size, _Size,
                              ctypes.c_uint], _STATUS, True),
    ("mi_circuit_frobenius_norm", [c_double_p, _void_p], _STATUS, True),
    ("mi_circuit_singular_values", [c_double_p, _Size, _void_p], _STATUS, True),
    ("mi_circuit_eigenvalues", [c_double_p, c_double_p, _Size, _void_p], _STATUS, True),
    # Eigenvalue summaries and head reports
    ("mi_circuit_eigen_summary", [ctypes.POINTER(EigenSummary), _void_p], _STATUS, True),
    ("mi_circuit_prev_token_share", [c_double_p, _void_p], _STATUS, True),
    ("mi_report_options_init", [ctypes.POINTER(ReportOptions), _Size], None, False),
    ("mi_model_head_report", [ctypes.POINTER(HeadReport), _Size, _void_p,
                              ctypes.POINTER(ReportOptions)], _STATUS, True),
    # Forward pass, paths and attribution
    ("mi_forward_extras_init", [ctypes.POINTER(ForwardExtras), _Size], None, False),
    ("mi_model_forward", [c_float_p, _Size, _void_p, c_size_p, _Size,
                          ctypes.POINTER(ForwardExtras)], _STATUS, True),
    ("mi_attribution_options_init", [ctypes.POINTER(AttributionOptions), _Size], None, False),
    ("mi_model_attribute", [c_size_p, _void_p, c_size_p, _Size,
                            ctypes.POINTER(AttributionOptions), ATTRIBUTION_FN, _void_p],
     _STATUS, True),
    ("mi_model_composition_scores", [c_double_p, _Size, _void_p, ctypes.c_int],
     _STATUS, True),
    ("mi_model_composition_tables", [c_double_p, _Size, _void_p, ctypes.POINTER(ctypes.c_int),
                                     _Size], _STATUS, True),
    ("mi_model_composition_baseline", [c_double_p, _void_p], _STATUS, True),
    ("mi_model_path_count", [c_size_p, _void_p, _Size], _STATUS, True),
    ("mi_model_paths", [c_size_p, _void_p, _Size, ctypes.c_uint, PATH_FN, _void_p],
     _STATUS, True),
    ("mi_model_top_paths", [c_size_p, c_double_p, c_size_p, _Size, _void_p,
                            _Size], _STATUS, True),
    ("mi_circuit_path", [ctypes.POINTER(_void_p), _void_p, _Size, c_size_p, c_size_p],
     _STATUS, True),
    ("mi_circuit_diag_rank", [c_size_p, _void_p, _Size, _Size], _STATUS, True),
    ("mi_circuit_copying_accuracy", [c_double_p, c_double_p, _void_p], _STATUS, True),
    ("mi_circuit_k_composition", [ctypes.POINTER(_void_p), _void_p, _Size,
                                  _Size, _Size, _Size,
                                  ctypes.c_uint], _STATUS, True),
    ("mi_model_repeated_tokens", [c_size_p, _Size, _void_p, _Size,
                                  _Size, ctypes.c_uint64], _STATUS, True),
    ("mi_model_attention_scores", [c_double_p, _Size, _void_p, c_size_p,
                                   _Size, _Size], _STATUS, True),
    # Skip-trigrams
    ("mi_skip_trigram_options_init", [ctypes.POINTER(SkipTrigramOptions), _Size], None, False),
    ("mi_model_skip_trigrams", [ctypes.POINTER(SkipTrigram), c_size_p, _Size, _void_p,
                                ctypes.POINTER(SkipTrigramOptions)], _STATUS, True),
    # Head roles and the HTML report
    ("mi_role_name", [ctypes.c_int], ctypes.c_char_p, False),
    ("mi_role_options_init", [ctypes.POINTER(RoleOptions), _Size], None, False),
    ("mi_model_head_roles", [ctypes.POINTER(HeadRoles), _Size, ctypes.POINTER(RolePartner),
                             _Size, c_size_p, _void_p, ctypes.POINTER(RoleOptions)],
     _STATUS, True),
    ("mi_model_skip_trigram_floor", [c_double_p, _void_p], _STATUS, True),
    ("mi_html_options_init", [ctypes.POINTER(HtmlOptions), _Size], None, False),
    ("mi_model_html_report", [_void_p, ctypes.POINTER(HtmlOptions), WRITE_FN, _void_p],
     _STATUS, True),
    ("mi_attribution_label", [ctypes.c_char_p, _Size, ctypes.c_int, _Size, _Size, c_size_p,
                              c_size_p], _STATUS, True),
    # Sweeps
    ("mi_circuit_row_summary", [ctypes.POINTER(RowSummary), _void_p, _Size, _Size],
     _STATUS, True),
    ("mi_model_digest", [ctypes.c_char_p, _Size, _void_p], _STATUS, True),
    ("mi_sweep_open", [ctypes.POINTER(_void_p), ctypes.c_char_p], _STATUS, True),
    ("mi_sweep_free", [_void_p], None, False),
    ("mi_sweep_metadata", [ctypes.POINTER(ctypes.c_char_p), _void_p, ctypes.c_char_p],
     _STATUS, False),
    ("mi_sweep_tensor_count", [_void_p], ctypes.c_size_t, False),
    ("mi_sweep_tensor_at", [ctypes.POINTER(SweepTensor), _void_p, _Size], _STATUS, True),
    ("mi_sweep_tensor_find", [ctypes.POINTER(SweepTensor), _void_p, ctypes.c_char_p],
     _STATUS, True),
    ("mi_sweep_skip_trigrams", [ctypes.POINTER(SkipTrigram), c_size_p, _Size, _void_p],
     _STATUS, True),
    ("mi_sweep_options_init", [ctypes.POINTER(SweepOptions), _Size], None, False),
    ("mi_sweep_plan_new", [ctypes.POINTER(_void_p), _void_p, c_size_p, _Size, c_size_p, _Size,
                           ctypes.POINTER(SweepOptions)], _STATUS, True),
    ("mi_sweep_plan_free", [_void_p], None, False),
    ("mi_sweep_plan_unit_count", [_void_p], ctypes.c_size_t, False),
    ("mi_sweep_plan_unit_name", [ctypes.POINTER(ctypes.c_char_p), _void_p, _Size],
     _STATUS, True),
    ("mi_sweep_plan_unit_entries", [c_size_p, _void_p, _Size], _STATUS, True),
    ("mi_sweep_plan_unit_done", [ctypes.POINTER(ctypes.c_int), _void_p, _Size,
                                 ctypes.c_char_p], _STATUS, True),
    ("mi_sweep_plan_merge", [_void_p, ctypes.c_char_p, ctypes.c_char_p], _STATUS, True),
    ("mi_sweep_worker_new", [ctypes.POINTER(_void_p), _void_p], _STATUS, True),
    ("mi_sweep_worker_free", [_void_p], None, False),
    ("mi_sweep_worker_run", [_void_p, _Size, ctypes.c_char_p], _STATUS, True),
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
