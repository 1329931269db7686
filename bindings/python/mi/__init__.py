"""libmi from Python: mechanistic interpretability of attention-only
transformers (QK/OV circuits, paths, eigenvalue summaries).

    import mi
    with mi.Model.create(n_layers=1, n_heads=2, d_model=8, d_head=4, d_vocab=10) as m:
        m.set_weight("W_E", rows_of_floats)
        ...

Every libmi failure raises :class:`MiError` carrying libmi's message. numpy is
optional: with it, matrices come back as numpy arrays (and numpy arrays go in
without copies where their layout allows); without it, nested lists come back
and lists, ``array.array`` or any buffer of floats/doubles go in.

Arrays in are checked against what each call needs before any pointer
reaches libmi (ValueError names the weight and both shapes; TypeError the
argument; IndexError an index out of range, negative ones counting from the
end). torch tensors (CPU) go in directly; :func:`set_output` ("torch")
makes results tensors. Coming from TransformerLens: :meth:`Model.from_state_dict`,
``model.W_Q`` & co. (stacked), ``model.OV[l, h]`` / ``model.QK[l, h]``
(:class:`FactoredMatrix`), batched :meth:`Model.forward`, ``ablate=``,
:meth:`Model.loss`, :meth:`Model.copy`, :func:`test_prompt`; see
docs/python.md.

The package, one module a concept: ``model`` (:class:`Model`), ``circuit``
(:class:`Circuit`, libmi's factored circuits), ``factored``
(:class:`FactoredMatrix`, numpy-side d_model circuits), ``state_dict``
(state dicts in memory), ``experiments`` (loss, test_prompt),
``tokenizer`` (:class:`Tokenizer`), ``results`` (the named tuples queries
return), ``arrays`` (arrays in and out, torch interop), ``lifetime``
(handles never freed under a running call), ``runtime`` (version, BLIS
kernels and threads), ``errors`` (one exception class per status),
``enums`` (every number shared with mi.h), ``plot`` (matplotlib), ``html``
(the HTML report), ``_sweep`` (sweep results files).
"""

from ._native import lib
from .arrays import get_output, set_output
from .circuit import Circuit, EigenSummary
from .enums import COMPOSITIONS, EMBEDDINGS, PARTS, POSITIONAL, PROCESS, WEIGHTS
from .errors import (MiDtypeError, MiError, MiFormatError, MiIndexError, MiInvalidArgumentError,
                     MiIOError, MiMissingTensorError, MiNonFiniteError, MiNumericError,
                     MiOutOfMemoryError, MiShapeError, MiStateError, MiTruncatedError,
                     MiUnsupportedError)
from .experiments import PromptTest, test_prompt
from .factored import FactoredMatrix
from .model import Model
from ._sweep import load_sweep, row_summary
from .enums import ROLES
from .results import Forward, HeadReport, HeadRole, Part, Path, RolePartner, SkipTrigram
from .runtime import get_num_threads, kernel_set, select_fast_kernels, set_num_threads, version
from .tokenizer import Tokenizer

__all__ = ["Model", "Tokenizer", "Circuit", "FactoredMatrix", "PromptTest", "test_prompt",
           "set_output", "get_output", "MiError", "EigenSummary", "HeadReport", "Path",
           "Part", "SkipTrigram", "HeadRole", "RolePartner", "ROLES", "load_sweep",
           "row_summary",
           "Forward", "version", "select_fast_kernels", "kernel_set", "set_num_threads",
           "get_num_threads", "PARTS", "WEIGHTS", "PROCESS", "POSITIONAL", "EMBEDDINGS", "COMPOSITIONS",
           "MiInvalidArgumentError", "MiOutOfMemoryError", "MiIOError", "MiFormatError",
           "MiShapeError", "MiUnsupportedError", "MiIndexError", "MiDtypeError",
           "MiMissingTensorError", "MiTruncatedError", "MiStateError", "MiNumericError",
           "MiNonFiniteError"]
__version__ = lib.mi_version_string().decode()
