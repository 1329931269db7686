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
"""

import ctypes
import os
import weakref
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import _native
from ._native import Config, LoadOptions, MiError, SIZE_MAX, lib
from ._arrays import as_matrix, OutArray, OutMatrix, numpy, size_vector
from ._circuit import Circuit, EigenSummary, heads_label
from ._tokenizer import Text, Tokenizer, encode as _encode, text_bytes

from ._sweep import load_sweep, row_summary

__all__ = ["Model", "Tokenizer", "Circuit", "MiError", "EigenSummary", "HeadReport", "Path",
           "Part", "SkipTrigram", "HeadRole", "RolePartner", "ROLES", "load_sweep",
           "row_summary",
           "Forward", "version", "select_fast_kernels", "kernel_set", "set_num_threads",
           "get_num_threads", "PARTS", "WEIGHTS", "PROCESS", "POSITIONAL"]
__version__ = lib.mi_version_string().decode()

#: mi_weight names, in enum order.
WEIGHTS = ["W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O",
           "W_U", "b_U", "ln1.w", "ln1.b", "ln_final.w", "ln_final.b"]
#: MI_PART_* bits by name.
PARTS = {"pos_embed": 1, "qkv_bias": 2, "out_bias": 4, "unembed_bias": 8,
         "ln": 16, "ln_final": 32, "mlp": 64}
#: MI_PROCESS_* bits by name.
PROCESS = {"fold_ln": 1, "center_writing": 2, "center_unembed": 4, "transformerlens": 7}
#: mi_positional values by TransformerLens's positional_embedding_type names.
POSITIONAL = {"default": 0, "standard": 1, "shortformer": 2, "none": 3}
#: MI_LOAD_* bits.
_LOAD_NO_CONFIG, _LOAD_NO_VOCAB = 1, 2
_LAYOUTS = {0: "memory", 1: "transformerlens", 2: "gpt2"}
_PER_HEAD = {"W_Q", "W_O", "b_Q"}
_PER_KV_HEAD = {"W_K", "W_V", "b_K", "b_V"}
_PER_LAYER = {"b_O", "ln1.w", "ln1.b"}


def version() -> str:
    """The loaded libmi's version string."""
    return lib.mi_version_string().decode()


def select_fast_kernels() -> None:
    """Opts this process in to the fastest BLIS kernel set its CPU runs
    (mi_blis_select_fast_kernels). Call it before any other libmi work:
    afterwards it raises MiError (wrong state)."""
    lib.mi_blis_select_fast_kernels()


def kernel_set() -> str:
    """The BLIS kernel set in use ("skx", "haswell", ...), starting BLIS."""
    out = ctypes.c_char_p()
    lib.mi_blis_kernel_set(ctypes.byref(out))
    return out.value.decode()


def set_num_threads(n: int) -> None:
    """Threads for each later libmi BLIS call (0: BLIS's own setting)."""
    lib.mi_set_num_threads(n)


def get_num_threads() -> int:
    """The value last given to :func:`set_num_threads`."""
    return lib.mi_get_num_threads()


#: mi_embedding values by name (a side of a QK circuit).
EMBEDDINGS = {"token": 0, "pos": 1}
#: mi_composition values by name.
COMPOSITIONS = {"Q": 0, "K": 1, "V": 2}
_QK_BIAS, _QK_SCALE = 1, 2
_SOURCES = {0: "embed", 1: "value_bias", 2: "out_bias", 3: "unembed_bias"}


def _qk_flags(bias: bool, scale: bool) -> int:
    return (_QK_BIAS if bias else 0) | (_QK_SCALE if scale else 0)


class HeadReport(NamedTuple):
    """One head's line of :meth:`Model.head_report` (mi_head_report)."""
    layer: int
    head: int
    ov: EigenSummary                   #: eigenvalues of the token OV circuit
    qk: EigenSummary                   #: eigenvalues of the token QK circuit
    prev_token_share: float            #: positional QK signature (NaN: not asked / no W_pos)
    prev_token_attention: float        #: behaviour: mean attention on the previous position
    duplicate_token_attention: float   #: behaviour: on earlier copies of the query token
    induction_attention: float         #: behaviour: after an earlier copy of the query token


class SkipTrigram(NamedTuple):
    """One triple "src ... dst -> out" of :meth:`Model.skip_trigrams` (mi_skip_trigram)."""
    layer: int
    head: int
    src: int
    dst: int
    out: int
    qk_z: float
    ov_z: float
    score: float


#: mi_role names by value (mi_role_name).
ROLES = ["none", "previous-token", "duplicate-token", "induction", "copying"]


class HeadRole(NamedTuple):
    """One head's role and its evidence (mi_head_roles); see Model.head_roles."""
    layer: int
    head: int
    role: str                   #: one of ROLES
    passed: frozenset           #: every role whose test the head passed
    ov_copying_score: float
    ov_top1: float
    ov_top1_chance: float       #: 1 / d_vocab
    qk_same_token: float
    prev_token_share: float
    prev_token_share_chance: float
    prev_token_attention: float
    prev_token_uniform: float   #: the same score of uniform causal attention
    duplicate_token_attention: float
    duplicate_token_uniform: float
    induction_attention: float
    induction_uniform: float
    k_composition: Optional[Tuple[int, int, float, float]]  #: strongest earlier (layer, head, score, z)
    k_chance: Tuple[float, float]  #: composition baseline (mean, sd)


def _role_options(thresholds: dict):
    """mi_role_options with the defaults, then the given thresholds by name."""
    options = _native.RoleOptions()
    lib.mi_role_options_init(ctypes.byref(options), ctypes.sizeof(options))
    for name, value in thresholds.items():
        if name not in {f for f, _ in _native.RoleOptions._fields_[2:]}:
            raise TypeError(f"unknown threshold {name!r}")
        setattr(options, name, value)
    return options


class RolePartner(NamedTuple):
    """A previous-token head (layer, head) an induction head (reader) K-composes with."""
    reader: Tuple[int, int]
    layer: int
    head: int
    score: float
    z: float


class Path(NamedTuple):
    """A path through heads (direct path: no heads) and its OV product's
    Frobenius norm, as :meth:`Model.paths` lists it."""
    heads: Tuple[Tuple[int, int], ...]
    norm: float

    @property
    def order(self) -> int:
        return len(self.heads)

    @property
    def label(self) -> str:
        return heads_label(self.heads) if self.heads else "direct"


class Part(NamedTuple):
    """One part of the logits from :meth:`Model.attribute`. ``source`` is
    "embed", "value_bias", "out_bias" or "unembed_bias"; ``heads`` the path's
    (layer, head) pairs; per reported position: ``token_logit`` (the chosen
    token's logit), ``logit_diff`` (minus the ``vs`` token's) and with
    ``full_logits`` ``logits`` (positions × d_vocab); None when not asked."""
    source: str
    source_layer: int
    heads: Tuple[Tuple[int, int], ...]
    positions: list
    token_logit: Optional[list]
    logit_diff: Optional[list]
    logits: Optional[list]

    @property
    def order(self) -> int:
        return len(self.heads)

    @property
    def label(self) -> str:
        """"direct", "L0H3->L1H0", "b_V L0H1", "b_O[0]->L1H2", "b_U"."""
        path = heads_label(self.heads)
        if self.source == "embed":
            return path or "direct"
        if self.source == "value_bias":
            first, rest = self.heads[0], heads_label(self.heads[1:])
            return f"b_V L{first[0]}H{first[1]}" + ("->" + rest if rest else "")
        if self.source == "out_bias":
            return f"b_O[{self.source_layer}]" + ("->" + path if path else "")
        return "b_U"


class Forward(NamedTuple):
    """:meth:`Model.forward` with ``patterns`` or ``resid``: the logits
    (n × d_vocab), the attention patterns ([L][H][n][n]) and the residual
    streams ([L + 1][n][d_model]); None for what was not asked."""
    logits: list
    patterns: Optional[list]
    resid: Optional[list]


def _copy_out(pointer, shape, ctype):
    """A copy of borrowed C memory (valid only during a callback)."""
    count = 1
    for n in shape:
        count *= n
    if numpy is not None:
        return numpy.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctype)),
                                        shape=shape).copy()
    flat = pointer[:count]
    return flat if len(shape) == 1 else [flat[i * shape[1]:(i + 1) * shape[1]]
                                         for i in range(shape[0])]


class _Callback:
    """Runs a Python function as a libmi callback: an exception inside it
    stops the walk (non-zero return) and is re-raised after the C call."""

    def __init__(self, fn):
        self.fn, self.error = fn, None

    def __call__(self, *args):
        try:
            return 1 if self.fn(*args) else 0
        except BaseException as e:  # re-raised by check(), after libmi returns
            self.error = e
            return 1

    def check(self):
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _weight_id(name: str) -> int:
    try:
        return WEIGHTS.index(name)
    except ValueError:
        raise ValueError(f"unknown weight {name!r}; one of {WEIGHTS}") from None


def _positional(name) -> int:
    if name is None:
        return POSITIONAL["default"]
    if name not in POSITIONAL:
        raise ValueError(f"unknown positional embedding {name!r}; one of {list(POSITIONAL)}")
    return POSITIONAL[name]


def _steps(process) -> int:
    if isinstance(process, int):
        return process
    names = [process] if isinstance(process, str) else list(process)
    bits = 0
    for name in names:
        if name not in PROCESS:
            raise ValueError(f"unknown processing step {name!r}; one of {list(PROCESS)}")
        bits |= PROCESS[name]
    return bits


class Model:
    """An attention-only transformer (mi_model). Free it with ``close()`` or a
    ``with`` block; the finaliser frees it otherwise."""

    def __init__(self, handle: int):
        self._handle = ctypes.c_void_p(handle)
        self._finalizer = weakref.finalize(self, lib.mi_model_free, ctypes.c_void_p(handle))

    @classmethod
    def create(cls, n_layers: int, n_heads: int, d_model: int, d_head: int, d_vocab: int,
               n_ctx: int = 0, n_kv_heads: int = 0, parts: Sequence[str] = (),
               ln_eps: float = 1e-5, positional: Optional[str] = None) -> "Model":
        """A model of this shape with zero weights (mi_model_create). ``parts``
        names optional parts: any of PARTS' keys. ``positional``: how W_pos
        enters, "standard" (the default with W_pos), "shortformer" (added to
        queries and keys after ln1 only) or "none"."""
        config = Config()
        lib.mi_config_init(ctypes.byref(config), ctypes.sizeof(config))
        config.n_layers, config.n_heads, config.n_kv_heads = n_layers, n_heads, n_kv_heads
        config.d_model, config.d_head, config.d_vocab, config.n_ctx = d_model, d_head, d_vocab, n_ctx
        config.ln_eps = ln_eps
        config.positional = _positional(positional)
        for part in parts:
            if part not in PARTS:
                raise ValueError(f"unknown part {part!r}; one of {list(PARTS)}")
            config.parts |= PARTS[part]
        handle = ctypes.c_void_p()
        lib.mi_model_create(ctypes.byref(handle), ctypes.byref(config))
        return cls(handle.value)

    @classmethod
    def from_arrays(cls, weights: dict, process="fold_ln", **shape) -> "Model":
        """A model from a dict of weights named as in WEIGHTS. Per-head
        weights are indexed ``[layer][head]``, per-layer ones ``[layer]``
        (numpy arrays [L, H, rows, cols] or nested lists both work). The parts
        follow from which weights are given; ``shape`` gives mi_config's sizes
        and ``positional`` (see :meth:`create`)."""
        present = {"W_pos": "pos_embed", "b_Q": "qkv_bias", "b_O": "out_bias",
                   "b_U": "unembed_bias", "ln1.w": "ln", "ln_final.w": "ln_final"}
        parts = [part for name, part in present.items() if name in weights]
        model = cls.create(parts=parts, **shape)
        try:
            config = model.config
            for name, value in weights.items():
                layers = config["n_layers"] if name in _PER_HEAD | _PER_KV_HEAD | _PER_LAYER else 1
                heads = (config["n_heads"] if name in _PER_HEAD else
                         config["n_kv_heads"] if name in _PER_KV_HEAD else 1)
                for layer in range(layers):
                    for head in range(heads):
                        item = value
                        if name in _PER_HEAD | _PER_KV_HEAD | _PER_LAYER:
                            item = item[layer]
                        if name in _PER_HEAD | _PER_KV_HEAD:
                            item = item[head]
                        model.set_weight(name, item, layer, head)
            if process is not None:
                model.process(process)
        except BaseException:
            model.close()
            raise
        return model

    @classmethod
    def load(cls, path, n_heads: Optional[int] = None, positional: Optional[str] = None,
             process="fold_ln", vocab=None, config: bool = True,
             merges=None) -> "Model":
        """A model from a weights file (.safetensors, or a torch.save archive:
        .pth, .pt, .bin; TransformerLens or GPT-2 names), a model folder, or a
        file's bytes (mi_model_load / mi_model_load_memory). A .pth carries no
        config: ARENA's attention-only models need positional="shortformer".

        A folder gives its config.json, its weights (model.safetensors,
        pytorch_model.bin, model_final.pth, or its one weights file) and its
        vocabulary (tokenizer.json, vocab.json or vocab.txt); a file gives the
        config.json beside it. ``n_heads`` and ``positional`` ("standard",
        "shortformer", "none") are checked against what the files say: a
        disagreement raises MiError naming both. ``process``: the steps applied
        after loading (None for raw weights). ``config=False`` ignores
        config.json (MI_LOAD_NO_CONFIG). ``vocab``: a vocabulary file to load;
        by default a folder's own, and for a file ``vocab.txt``,
        ``tokenizer.json`` or else ``vocab.json`` beside it when present (with the ``merges.txt`` beside
        a vocab.json, or ``merges``, as its tokenizer: :meth:`load_tokenizer`);
        False loads none."""
        options = LoadOptions()
        lib.mi_load_options_init(ctypes.byref(options), ctypes.sizeof(options))
        options.n_heads = n_heads or 0
        options.positional = _positional(positional)
        options.process = 0 if process is None else _steps(process)
        options.flags = (0 if config else _LOAD_NO_CONFIG) | (_LOAD_NO_VOCAB if vocab is False else 0)
        handle = ctypes.c_void_p()
        if isinstance(path, (bytes, bytearray, memoryview)):
            data = bytes(path)
            lib.mi_model_load_memory(ctypes.byref(handle), data, len(data), ctypes.byref(options))
            model = cls(handle.value)
        else:
            path = os.fspath(path)
            lib.mi_model_load(ctypes.byref(handle), path.encode(), ctypes.byref(options))
            model = cls(handle.value)
            if vocab is None and not os.path.isdir(path):
                folder = os.path.dirname(path)
                vocab = next((os.path.join(folder, name)
                              for name in ("vocab.txt", "tokenizer.json", "vocab.json")
                              if os.path.exists(os.path.join(folder, name))), None)
                beside = os.path.join(folder, "merges.txt")
                if merges is None and vocab is not None and vocab.endswith("vocab.json") \
                        and os.path.exists(beside):
                    merges = beside
        if vocab is not None and vocab is not False:
            try:
                if merges is not None:
                    model.load_tokenizer(vocab, merges)
                else:
                    model.load_vocab(vocab)
            except BaseException:
                model.close()
                raise
        return model

    def load_vocab(self, path) -> None:
        """Loads token strings: vocab.json, tokenizer.json or one token a line."""
        lib.mi_model_load_vocab(self._h(), os.fspath(path).encode())

    def token_str(self, token_id: int) -> str:
        """A token's readable text (GPT-2's byte-level symbols decoded; bytes
        that are not UTF-8 are replaced)."""
        pointer, length = ctypes.c_void_p(), ctypes.c_size_t()
        lib.mi_model_token_bytes(ctypes.byref(pointer), ctypes.byref(length), self._h(), token_id)
        if length.value == 0:
            return ""
        return ctypes.string_at(pointer.value, length.value).decode("utf-8", errors="replace")

    def load_tokenizer(self, vocab, merges=None) -> None:
        """Loads a tokenizer and its token strings: a vocab.json (or
        encoder.json) with its merges file, a tokenizer.json, or one token a
        line (mi_model_load_tokenizer). :meth:`load_vocab` of a tokenizer.json
        or a text file loads their tokenizer too."""
        lib.mi_model_load_tokenizer(self._h(), os.fspath(vocab).encode(),
                                    None if merges is None else os.fspath(merges).encode())

    def load_tokenizer_bytes(self, vocab: bytes, merges: Optional[bytes] = None) -> None:
        """:meth:`load_tokenizer` from the files' contents."""
        vocab = bytes(vocab)
        merges = None if merges is None else bytes(merges)
        lib.mi_model_load_tokenizer_memory(self._h(), vocab, len(vocab), merges,
                                           0 if merges is None else len(merges))

    def tokenize(self, text: Text, prepend_bos: bool = False) -> List[int]:
        """The token ids of ``text`` with the model's tokenizer. No
        beginning-of-sequence token unless ``prepend_bos`` (libmi's default
        everywhere; TransformerLens's is True: pass it to compare)."""
        handle = ctypes.c_void_p()
        lib.mi_model_tokenizer(ctypes.byref(handle), self._h())
        return _encode(handle, text, prepend_bos)

    def tokens(self, tokens, prepend_bos: bool = False):
        """Token ids from text (tokenized) or from ids (as they are; then
        ``prepend_bos`` is not applied: the ids are taken as given)."""
        if isinstance(tokens, (str, bytes, bytearray, memoryview)):
            return self.tokenize(tokens, prepend_bos)
        return tokens

    def to_str_tokens(self, tokens, prepend_bos: bool = False) -> List[str]:
        """The string of each token of ``tokens`` (text, tokenized first, or
        ids), as :meth:`token_str` gives it."""
        return [self.token_str(t) for t in self.tokens(tokens, prepend_bos)]

    def _one_token(self, token) -> int:
        """A token named by its id, or by its string (a vocabulary token, or
        text that is one token)."""
        if not isinstance(token, (str, bytes, bytearray, memoryview)):
            return int(token)
        if isinstance(token, str):
            try:
                return self.token_id(token)
            except MiError:
                pass
        ids = self.tokenize(token)
        if len(ids) != 1:
            raise ValueError(f"{token!r} is {len(ids)} tokens, not one")
        return ids[0]

    def load_vocab_bytes(self, data: bytes) -> None:
        """Loads token strings from a vocabulary file's contents."""
        data = bytes(data)
        lib.mi_model_load_vocab_memory(self._h(), data, len(data))

    def token_text(self, token_id: int) -> str:
        """The token's string as libmi gives it (mi_model_token_str; stops at
        a NUL byte: :meth:`token_str` does not)."""
        out = ctypes.c_char_p()
        lib.mi_model_token_str(ctypes.byref(out), self._h(), token_id)
        return out.value.decode("utf-8", errors="replace")

    def token_id(self, text: str) -> int:
        """The id of a token's text (decoded or as the vocabulary file spells it)."""
        out = ctypes.c_size_t()
        lib.mi_model_token_id(ctypes.byref(out), self._h(), text.encode())
        return out.value

    def _h(self) -> ctypes.c_void_p:
        if not self._handle.value:
            raise ValueError("the model is closed")
        return self._handle

    def close(self) -> None:
        """Lets go of the model now (idempotent). Circuits made from it keep
        it alive inside libmi until they are closed too."""
        self._finalizer()
        self._handle = ctypes.c_void_p()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def config(self) -> dict:
        """The model's shape as a dict of mi_config's fields."""
        config = Config()
        lib.mi_config_init(ctypes.byref(config), ctypes.sizeof(config))
        lib.mi_model_get_config(ctypes.byref(config), self._h())
        return {name: getattr(config, name) for name, _ in Config._fields_ if name != "struct_size"}

    @property
    def positional(self) -> str:
        """How positions enter: "standard", "shortformer" or "none"."""
        kind = self.config["positional"]
        return next(name for name, value in POSITIONAL.items() if value == kind)

    @property
    def layout(self) -> str:
        """Where the weights came from: "memory", "transformerlens" or "gpt2"."""
        return _LAYOUTS[lib.mi_model_layout(self._h())]

    @property
    def processing(self) -> set:
        """The processing steps applied to the weights, as a set of names."""
        bits = lib.mi_model_processing(self._h())
        return {name for name, bit in PROCESS.items() if bit & (bit - 1) == 0 and bits & bit}

    def set_weight(self, name: str, matrix, layer: int = 0, head: int = 0) -> None:
        """Copies one weight copy in (mi_model_set_weight)."""
        m = as_matrix(matrix)
        lib.mi_model_set_weight(self._h(), _weight_id(name), layer, head, m.dtype,
                                m.pointer, m.row_stride)

    def process(self, steps="fold_ln") -> None:
        """Folds LayerNorm / centres weights, once (mi_model_process). ``steps``:
        a name of PROCESS, a list of names, or the bits."""
        lib.mi_model_process(self._h(), _steps(steps))

    def weight(self, name: str, layer: int = 0, head: int = 0):
        """One weight copy as the model now holds it (float32): a numpy array,
        or nested lists without numpy; vectors come back 1-D."""
        rows, cols = ctypes.c_size_t(), ctypes.c_size_t()
        which = _weight_id(name)
        lib.mi_model_weight_shape(ctypes.byref(rows), ctypes.byref(cols), self._h(), which)
        out = OutMatrix(rows.value, cols.value)
        lib.mi_model_get_weight(out.pointer, cols.value, self._h(), which, layer, head)
        vector = name.startswith("b_") or name.startswith("ln")
        return out.result(vector=vector)

    # Circuits

    def qk(self, layer: int, head: int, query: str = "token", key: str = "token",
           bias: bool = True, scale: bool = True) -> Circuit:
        """The QK circuit of head (layer, head): query side × key side scores.
        ``query``/``key``: "token" (W_E) or "pos" (W_pos). ``bias`` adds b_Q
        and b_K to the factors and ``scale`` divides by √d_head, so with both
        the entries are the scores the forward pass puts into the softmax."""
        for side in (query, key):
            if side not in EMBEDDINGS:
                raise ValueError(f"unknown embedding {side!r}; one of {list(EMBEDDINGS)}")
        return Circuit._make(lib.mi_circuit_qk, self._h(), layer, head, EMBEDDINGS[query],
                             EMBEDDINGS[key], _qk_flags(bias, scale))

    def ov(self, layer: int, head: int) -> Circuit:
        """The token OV circuit W_E W_V W_O W_U (source token × output logit)."""
        return Circuit._make(lib.mi_circuit_ov, self._h(), layer, head)

    def direct(self) -> Circuit:
        """The direct path W_E W_U (input token × output logit)."""
        return Circuit._make(lib.mi_circuit_direct, self._h())

    def path(self, heads: Sequence[Tuple[int, int]] = ()) -> Circuit:
        """The OV product of the path through ``heads`` ((layer, head) pairs in
        increasing layers; empty: the direct path) as a circuit (mi_circuit_path)."""
        layers, n, keep_l = size_vector([l for l, _ in heads])
        hs, _, keep_h = size_vector([h for _, h in heads])
        return Circuit._make(lib.mi_circuit_path, self._h(), n, layers, hs)

    def k_composition_circuit(self, layer1: int, head1: int, layer2: int, head2: int,
                              bias: bool = True, scale: bool = True) -> Circuit:
        """W_E W_QK² (W_E W_OV¹)ᵀ: query token × the token head 1 wrote into the
        key's stream; a strong diagonal for a previous-token head 1 and an
        induction head 2."""
        return Circuit._make(lib.mi_circuit_k_composition, self._h(), layer1, head1, layer2,
                             head2, _qk_flags(bias, scale))

    # Reports and scores

    def head_report(self, bias: bool = True, scale: bool = True, prev_token: bool = True,
                    behaviour_sequences: int = 16, behaviour_half_length: int = 0,
                    behaviour_seed: int = 1) -> List[HeadReport]:
        """Every head's eigenvalue summaries (OV, token QK with ``bias`` and
        ``scale``), previous-token share of its positional QK circuit and
        behavioural scores on ``behaviour_sequences`` random repeated sequences
        (0: none, NaN), in (layer, head) order (mi_model_head_report)."""
        options = _native.ReportOptions()
        lib.mi_report_options_init(ctypes.byref(options), ctypes.sizeof(options))
        options.qk_flags = _qk_flags(bias, scale)
        options.prev_token = 1 if prev_token else 0
        options.behaviour_sequences = behaviour_sequences
        options.behaviour_half_length = behaviour_half_length
        options.behaviour_seed = behaviour_seed
        config = self.config
        count = config["n_layers"] * config["n_heads"]
        lines = (_native.HeadReport * count)()
        lines[0].struct_size = ctypes.sizeof(_native.HeadReport)
        lib.mi_model_head_report(lines, count, self._h(), ctypes.byref(options))
        return [HeadReport(r.layer, r.head, EigenSummary._of(r.ov), EigenSummary._of(r.qk),
                           r.prev_token_share, r.prev_token_attention,
                           r.duplicate_token_attention, r.induction_attention) for r in lines]

    def head_roles(self, report: Optional[dict] = None, **thresholds):
        """Every head's role by libmi's stated rule (mi_model_head_roles) and
        the induction heads' K-composition partners: ``(roles, partners)``.
        ``thresholds``: mi_role_options fields (min_attention=0.5,
        min_attention_lift=3, min_prev_share_lift=2, min_copying_score=0.5,
        min_copying_lift=50, min_k_composition_z=3); ``report``:
        mi_report_options fields (behaviour_sequences, ...)."""
        options = _role_options(thresholds)
        rep = _native.ReportOptions()
        lib.mi_report_options_init(ctypes.byref(rep), ctypes.sizeof(rep))
        for name, value in (report or {}).items():
            setattr(rep, name, value)
        options.report = ctypes.pointer(rep)
        c = self.config
        heads = c["n_layers"] * c["n_heads"]
        lines = (_native.HeadRoles * heads)()
        lines[0].struct_size = ctypes.sizeof(_native.HeadRoles)
        partners = (_native.RolePartner * (heads * heads + 1))()
        partners[0].struct_size = ctypes.sizeof(_native.RolePartner)
        found = ctypes.c_size_t()
        lib.mi_model_head_roles(lines, heads, partners, heads * heads + 1, ctypes.byref(found),
                                self._h(), ctypes.byref(options))
        roles = [HeadRole(
            r.layer, r.head, ROLES[r.role],
            frozenset(ROLES[k] for k in range(1, len(ROLES)) if r.passed & (1 << k)),
            r.ov_copying_score, r.ov_top1, r.ov_top1_chance, r.qk_same_token,
            r.prev_token_share, r.prev_token_share_chance, r.prev_token_attention,
            r.prev_token_uniform, r.duplicate_token_attention, r.duplicate_token_uniform,
            r.induction_attention, r.induction_uniform,
            None if r.k_layer == SIZE_MAX else (r.k_layer, r.k_head, r.k_score, r.k_z),
            (r.k_chance, r.k_chance_sd)) for r in lines]
        listed = [RolePartner((lines[p.reader].layer, lines[p.reader].head), p.layer, p.head,
                              p.score, p.z) for p in partners[:found.value]]
        return roles, listed

    def skip_trigram_floor(self) -> float:
        """The skip-trigram noise floor sqrt(2 ln(L·H·d_vocab²)) (mi_model_skip_trigram_floor)."""
        out = ctypes.c_double()
        lib.mi_model_skip_trigram_floor(ctypes.byref(out), self._h())
        return out.value

    def html_report(self, tokens: Optional[Sequence[int]] = None, trigrams: int = 24,
                    max_order: int = 2, top_parts: int = 12, title: Optional[str] = None,
                    **thresholds) -> str:
        """The self-contained HTML page of mi_model_html_report, as text (mi.html.report
        writes and shows it). ``tokens``: the prompt's ids, or None."""
        options = _native.HtmlOptions()
        lib.mi_html_options_init(ctypes.byref(options), ctypes.sizeof(options))
        keep = None
        if tokens is not None:
            options.tokens, options.n_tokens, keep = size_vector(list(tokens))
        options.trigrams, options.max_order, options.top_parts = trigrams, max_order, top_parts
        if title is not None:
            options.title = title.encode()
        roles = _role_options(thresholds)
        options.roles = ctypes.pointer(roles)
        chunks = []
        writer = _native.WRITE_FN(lambda data, size, user: chunks.append(
            ctypes.string_at(data, size)) or 0)
        lib.mi_model_html_report(self._h(), ctypes.byref(options), writer, None)
        del keep
        return b"".join(chunks).decode()

    def skip_trigrams(self, count: int = 24, bias: bool = True, scale: bool = True,
                      outputs_per_source: int = 2, destinations_per_source: int = 2,
                      progress: Optional[Callable[[int, int], object]] = None
                      ) -> List[SkipTrigram]:
        """The ``count`` strongest skip-trigrams over every head, best first
        (mi_model_skip_trigrams): QK (with ``bias``, ``scale``) and OV entries
        z-scored within their rows, each source's best outputs and
        destinations paired, each triple scored min(z_QK, z_OV).
        ``progress(done, total)`` is called after each block of rows."""
        options = _native.SkipTrigramOptions()
        lib.mi_skip_trigram_options_init(ctypes.byref(options), ctypes.sizeof(options))
        options.qk_flags = _qk_flags(bias, scale)
        options.outputs_per_source = outputs_per_source
        options.destinations_per_source = destinations_per_source
        # The callback cannot stop the search: its first exception is kept
        # and raised once libmi returns.
        watcher = _Callback(lambda done, total: progress(done, total))
        if progress is not None:
            callback = _native.PROGRESS_FN(lambda done, total, user: watcher(done, total))
            options.progress = callback
        out = (_native.SkipTrigram * max(count, 1))()
        out[0].struct_size = ctypes.sizeof(_native.SkipTrigram)
        found = ctypes.c_size_t()
        lib.mi_model_skip_trigrams(out, ctypes.byref(found), count, self._h(),
                                   ctypes.byref(options))
        watcher.check()
        return [SkipTrigram(t.layer, t.head, t.src, t.dst, t.out, t.qk_z, t.ov_z, t.score)
                for t in out[:found.value]]

    def composition_scores(self, kind: str):
        """Every head's "Q", "K" or "V" composition score with every head of
        every later layer, indexed [l1][h1][l2][h2] (0 where l2 ≤ l1)."""
        if kind not in COMPOSITIONS:
            raise ValueError(f"unknown composition {kind!r}; one of {list(COMPOSITIONS)}")
        config = self.config
        L, H = config["n_layers"], config["n_heads"]
        out = OutArray((L, H, L, H), ctypes.c_double)
        lib.mi_model_composition_scores(out.pointer, out.count, self._h(), COMPOSITIONS[kind])
        return out.result()

    def composition_baseline(self) -> Tuple[float, float, float]:
        """The chance level of a composition score for this model's shapes:
        (mean, standard deviation of one score, standard error of the mean)."""
        out = (ctypes.c_double * 3)()
        lib.mi_model_composition_baseline(out, self._h())
        return out[0], out[1], out[2]

    def repeated_tokens(self, n_sequences: int, half: int, seed: int = 1):
        """Seeded random sequences of ``half`` tokens each repeated twice,
        n_sequences × 2·half (mi_model_repeated_tokens)."""
        out = OutArray((n_sequences, 2 * half), ctypes.c_size_t)
        lib.mi_model_repeated_tokens(out.pointer, out.count, self._h(), n_sequences, half, seed)
        return out.result()

    def attention_scores(self, sequences, prepend_bos: bool = False):
        """Behavioural scores of every head over token sequences of one
        length, [L][H][3]: previous-token, duplicate-token, induction. Each
        sequence is ids or text."""
        rows = sequences.tolist() if hasattr(sequences, "tolist") else \
            [list(self.tokens(s, prepend_bos)) for s in sequences]
        if not rows or any(len(r) != len(rows[0]) for r in rows):
            raise ValueError("attention_scores needs one or more sequences of one length")
        tokens, _, keep = size_vector([t for r in rows for t in r])
        config = self.config
        out = OutArray((config["n_layers"], config["n_heads"], 3), ctypes.c_double)
        lib.mi_model_attention_scores(out.pointer, out.count, self._h(), tokens, len(rows),
                                      len(rows[0]))
        return out.result()

    # Paths

    def path_count(self, max_order: Optional[int] = None) -> int:
        """How many paths have order ≤ max_order (None: all)."""
        out = ctypes.c_size_t()
        lib.mi_model_path_count(ctypes.byref(out), self._h(),
                                SIZE_MAX if max_order is None else max_order)
        return out.value

    def paths(self, max_order: Optional[int] = None, top: Optional[int] = None,
              callback: Optional[Callable[[Path, Optional[Circuit]], object]] = None,
              circuits: bool = False) -> List[Path]:
        """Every path of order ≤ max_order (None: all) with its OV product's
        norm, direct path first then depth first; with ``top``, the ``top``
        largest by norm, largest first (mi_model_top_paths). With ``callback``
        the paths go to ``callback(path, circuit)`` one at a time instead (a
        true return stops the walk); with ``circuits`` it also gets the path's
        OV circuit, valid only during the call (see :meth:`path` to keep one).
        Returns the paths listed, or delivered to the callback."""
        order = SIZE_MAX if max_order is None else max_order
        if top is not None:
            if callback is not None:
                raise ValueError("top and callback do not go together")
            L = self.config["n_layers"]
            heads = OutArray((max(top, 1), L), ctypes.c_size_t)
            norms = (ctypes.c_double * max(top, 1))()
            count = ctypes.c_size_t()
            lib.mi_model_top_paths(heads.pointer, norms, ctypes.byref(count), top, self._h(),
                                   order)
            flat = heads.pointer
            return [Path(tuple((l, flat[i * L + l]) for l in range(L)
                               if flat[i * L + l] != SIZE_MAX), norms[i])
                    for i in range(count.value)]
        listed = []

        def visit(pointer, user):
            p = pointer.contents
            path = Path(tuple((p.layers[i], p.heads[i]) for i in range(p.order)), p.norm)
            listed.append(path)
            if callback is None:
                return 0
            circuit = Circuit(p.circuit, borrowed=True) if p.circuit else None
            try:
                return callback(path, circuit)
            finally:
                if circuit is not None:
                    circuit.close()  # borrowed: libmi frees it after we return

        runner = _Callback(visit)
        fn = _native.PATH_FN(runner)
        lib.mi_model_paths(None, self._h(), order, 1 if circuits else 0, fn, None)
        runner.check()
        return listed

    # Forward pass and attribution

    def forward(self, tokens: Union[Text, Sequence[int]], patterns: bool = False,
                resid: bool = False, prepend_bos: bool = False):
        """The logits (n × d_vocab, float32) of a token sequence (ids, or text
        tokenized with ``prepend_bos``). With ``patterns`` or ``resid`` a
        :class:`Forward` with the attention patterns [L][H][n][n] and residual
        streams [L + 1][n][d_model] too."""
        ids, n, keep = size_vector(self.tokens(tokens, prepend_bos))
        config = self.config
        L, H, D, V = config["n_layers"], config["n_heads"], config["d_model"], config["d_vocab"]
        logits = OutArray((n, V), ctypes.c_float)
        extras = _native.ForwardExtras()
        lib.mi_forward_extras_init(ctypes.byref(extras), ctypes.sizeof(extras))
        pat = OutArray((L, H, n, n), ctypes.c_float) if patterns else None
        res = OutArray((L + 1, n, D), ctypes.c_float) if resid else None
        if pat is not None:
            extras.patterns, extras.patterns_count = pat.pointer, pat.count
        if res is not None:
            extras.resid, extras.resid_count = res.pointer, res.count
        lib.mi_model_forward(logits.pointer, V, self._h(), ids, n, ctypes.byref(extras))
        if not patterns and not resid:
            return logits.result()
        return Forward(logits.result(), pat.result() if pat else None,
                       res.result() if res else None)

    def attribute(self, tokens: Union[Text, Sequence[int]],
                  positions: Optional[Sequence[int]] = None,
                  token: Union[None, int, str, Sequence[Union[int, str]]] = None,
                  vs: Union[None, int, str, Sequence[Union[int, str]]] = None,
                  max_order: Optional[int] = None, full_logits: bool = False,
                  callback: Optional[Callable[[Part], object]] = None,
                  prepend_bos: bool = False) -> List[Part]:
        """Splits the logits of ``tokens`` into parts, one per source and path
        (mi_model_attribute): with max_order None they sum to the forward
        logits. ``positions``: which positions (default all); ``token``: the
        logit to report at each (one id for all, or one per position); ``vs``:
        a token to subtract (logit difference); ``full_logits``: every logit.
        Returns the parts, or with ``callback`` hands each to it (a true
        return stops) and returns those delivered. ``tokens`` may be text
        (tokenized with ``prepend_bos``), and ``token`` and ``vs`` strings (a
        token's string, or text that is one token)."""
        ids, n, keep_ids = size_vector(self.tokens(tokens, prepend_bos))
        options = _native.AttributionOptions()
        lib.mi_attribution_options_init(ctypes.byref(options), ctypes.sizeof(options))
        if max_order is not None:
            options.max_order = max_order
        keep = []
        n_positions = n
        if positions is not None:
            pos, n_positions, owner = size_vector(positions)
            options.positions, options.n_positions = pos, n_positions
            keep.append(owner)
        for name, value in (("logit_tokens", token), ("diff_tokens", vs)):
            if value is None:
                continue
            single = isinstance(value, (int, str, bytes, bytearray, memoryview))
            values = [value] * n_positions if single else value
            pointer, count, owner = size_vector([self._one_token(v) for v in values])
            if count != n_positions:
                raise ValueError(f"{count} tokens for {n_positions} positions")
            setattr(options, name, pointer)
            keep.append(owner)
        if full_logits:
            options.flags = 1
        V = self.config["d_vocab"]
        listed = []

        def visit(pointer, user):
            p = pointer.contents
            k = p.n_positions
            part = Part(
                _SOURCES[p.source], p.source_layer,
                tuple((p.layers[i], p.heads[i]) for i in range(p.order)),
                p.positions[:k] if p.positions else list(range(k)),
                _copy_out(p.token_logit, (k,), ctypes.c_double) if p.token_logit else None,
                _copy_out(p.logit_diff, (k,), ctypes.c_double) if p.logit_diff else None,
                _copy_out(p.logits, (k, V), ctypes.c_float) if p.logits else None)
            listed.append(part)
            return callback(part) if callback is not None else 0

        runner = _Callback(visit)
        fn = _native.ATTRIBUTION_FN(runner)
        lib.mi_model_attribute(None, self._h(), ids, n, ctypes.byref(options), fn, None)
        runner.check()
        return listed
