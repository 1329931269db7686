"""mi.Model: an attention-only transformer, its weights, circuits, paths,
forward pass and attribution.

Shapes in the docstrings: L layers, H heads, G key/value heads, D = d_model,
d = d_head, V = d_vocab, n positions, B prompts in a batch.
"""

import ctypes
import os
import weakref
from typing import Callable, List, Optional, Sequence, Tuple, Union

from . import _native
from . import arrays
from ._native import Config, LoadOptions, MiError, SIZE_MAX, lib
from .arrays import OutArray, host_array, index, int_array, numpy, size
from .circuit import Circuit, EigenSummary
from .enums import (ATTRIBUTE_FULL_LOGITS, COMPOSITIONS, EMBEDDINGS, LAYOUTS, LOAD_NO_CONFIG,
                    LOAD_NO_VOCAB, PARTS, POSITIONAL, PROCESS, QK_BIAS, QK_SCALE, ROLES,
                    SOURCES, WEIGHTS)
from .lifetime import Guard, reads, writes
from .results import Forward, HeadReport, HeadRole, Part, Path, RolePartner, SkipTrigram
from .tokenizer import Text, encode as _encode, file_bytes

_PER_HEAD = {"W_Q", "W_O", "b_Q"}
_PER_KV_HEAD = {"W_K", "W_V", "b_K", "b_V"}
_PER_LAYER = {"b_O", "ln1.w", "ln1.b"}
_VECTORS = {"b_Q", "b_K", "b_V", "b_O", "b_U", "ln1.w", "ln1.b", "ln_final.w", "ln_final.b"}
#: Weights every model has; from_arrays refuses a dict without them.
REQUIRED = ["W_E", "W_Q", "W_K", "W_V", "W_O", "W_U"]
#: The weight that makes each optional part present, and the ones that come with it.
_PART_OF = {"W_pos": "pos_embed", "b_Q": "qkv_bias", "b_K": "qkv_bias", "b_V": "qkv_bias",
            "b_O": "out_bias", "b_U": "unembed_bias", "ln1.w": "ln", "ln1.b": "ln",
            "ln_final.w": "ln_final", "ln_final.b": "ln_final"}


def _qk_flags(bias: bool, scale: bool) -> int:
    return (QK_BIAS if bias else 0) | (QK_SCALE if scale else 0)


def _copy_out(pointer, shape, ctype):
    """A copy of borrowed C memory (valid only during a callback)."""
    count = arrays.product(shape)
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
    if isinstance(process, int) and not isinstance(process, bool):
        if process & ~PROCESS["transformerlens"] or process < 0:
            raise ValueError(f"unknown processing bits {process:#x}")
        return process
    names = [process] if isinstance(process, str) else list(process)
    bits = 0
    for name in names:
        if name not in PROCESS:
            raise ValueError(f"unknown processing step {name!r}; one of {list(PROCESS)}")
        bits |= PROCESS[name]
    return bits


def _is_text(x) -> bool:
    return isinstance(x, (str, bytes, bytearray))


def _set_fields(struct, values, what, skip=1, end=None):
    """Sets fields of a ctypes options struct by name, each checked: size_t
    and uint64 fields through size(), doubles through float(); TypeError for
    a name the struct lacks (the first ``skip`` fields, and those from
    ``end`` on, are not settable)."""
    fields = dict(struct._fields_[skip:end])
    for name, value in values.items():
        kind = fields.get(name)
        if kind is None or kind not in (ctypes.c_size_t, ctypes.c_uint64, ctypes.c_double,
                                        ctypes.c_int, ctypes.c_uint):
            raise TypeError(f"unknown {what} {name!r}; one of "
                            f"{[f for f, t in fields.items() if not hasattr(t, 'contents')]}")
        if kind is ctypes.c_double:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{what} {name} must be a number, not {type(value).__name__}")
            setattr(struct, name, float(value))
        elif kind in (ctypes.c_size_t, ctypes.c_uint64):
            setattr(struct, name, size(value, name))
        else:  # int and unsigned flags
            n = size(int(value) if isinstance(value, bool) else value, name)
            if n >= 1 << 31:
                raise OverflowError(f"{name} {n} does not fit an int")
            setattr(struct, name, n)


def _role_options(thresholds: dict):
    """mi_role_options with the defaults, then the given thresholds by name."""
    options = _native.RoleOptions()
    lib.mi_role_options_init(ctypes.byref(options), ctypes.sizeof(options))
    # The thresholds end where the precomputed copying accuracies begin.
    _set_fields(options, thresholds, "threshold", skip=2,
                end=[f for f, _ in options._fields_].index("ov_top1"))
    return options


class Model:
    """An attention-only transformer (mi_model).

    Make one with :meth:`load` (files, folders, bytes), :meth:`from_state_dict`
    (a TransformerLens or GPT-2 state dict in memory), :meth:`from_arrays` or
    :meth:`create`; :meth:`copy` gives an independent copy to edit.

    Free it with ``close()`` or a ``with`` block; the finaliser frees it
    otherwise. ``close()`` never frees a model while a call on it is running:
    from another thread it waits for the call to end; from inside a callback
    of that call (``paths``, ``attribute``, ``skip_trigrams``) it raises
    :class:`MiStateError`. Queries may run from many threads at once;
    :meth:`set_weight`, :meth:`process` and loading a vocabulary wait for
    them and run alone.
    """

    def __init__(self, handle: int):
        self._guard = Guard(handle, lambda h: lib.mi_model_free(ctypes.c_void_p(h)), "model")
        self._finalizer = weakref.finalize(self, self._guard.close)
        self._config = None

    # ---- making models -------------------------------------------------------

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
        for field, value in (("n_layers", n_layers), ("n_heads", n_heads),
                             ("n_kv_heads", n_kv_heads), ("d_model", d_model),
                             ("d_head", d_head), ("d_vocab", d_vocab), ("n_ctx", n_ctx)):
            setattr(config, field, size(value, field))
        config.ln_eps = float(ln_eps)
        config.positional = _positional(positional)
        if isinstance(parts, str):
            parts = [parts]
        for part in parts:
            if part not in PARTS:
                raise ValueError(f"unknown part {part!r}; one of {list(PARTS)}")
            config.parts |= PARTS[part]
        handle = ctypes.c_void_p()
        lib.mi_model_create(ctypes.byref(handle), ctypes.byref(config))
        return cls(handle.value)

    @classmethod
    def from_arrays(cls, weights: dict, process="fold_ln", **shape) -> "Model":
        """A model from a dict of weights named as in WEIGHTS, stacked:
        per-head weights [L, H, rows, cols] (W_K, W_V, b_K, b_V: [L, G, ...]),
        per-layer ones [L, D], global ones as mi_model_set_weight's table
        (W_E [V, D], W_pos [n_ctx, D], W_U [D, V], b_U [V], ln_final.* [D]).
        Any array-like: numpy, torch tensors, buffers, nested lists.

        W_E, W_Q, W_K, W_V, W_O and W_U are required; the optional parts
        follow from which others are given (b_Q, b_K and b_V together). The
        sizes come from the shapes; keywords of :meth:`create` (n_layers,
        n_ctx, positional, ln_eps, ...) add to them and must agree.
        ``process``: steps applied after (None: raw weights). Every shape is
        checked first: ValueError names the weight, the expected and the
        given shape."""
        if not isinstance(weights, dict):
            raise TypeError(f"from_arrays: weights must be a dict, not {type(weights).__name__}")
        unknown = [name for name in weights if name not in WEIGHTS]
        if unknown:
            raise ValueError(f"from_arrays: unknown weights {unknown}; names are {WEIGHTS}")
        missing = [name for name in REQUIRED if name not in weights]
        if missing:
            raise ValueError(f"from_arrays: missing {missing} (required: {REQUIRED})")
        qkv = [name for name in ("b_Q", "b_K", "b_V") if name in weights]
        if qkv and len(qkv) != 3:
            raise ValueError(f"from_arrays: {qkv} given without "
                             f"{[n for n in ('b_Q', 'b_K', 'b_V') if n not in qkv]}")
        host = {name: host_array(value, name) for name, value in weights.items()}
        inferred = {}

        def fix(field, value, source):
            if field in inferred and inferred[field][0] != value:
                raise ValueError(f"from_arrays: {source} says {field} = {value}, but "
                                 f"{inferred[field][1]} says {inferred[field][0]}")
            inferred.setdefault(field, (value, source))

        def dims(name, count):
            got = host[name].shape
            if len(got) != count:
                raise ValueError(f"{name}: expected {count} dimensions, got shape {list(got)}")
            return got

        fix("d_vocab", dims("W_E", 2)[0], "W_E")
        fix("d_model", dims("W_E", 2)[1], "W_E")
        L, H, D, d = dims("W_Q", 4)
        for field, value in (("n_layers", L), ("n_heads", H), ("d_model", D), ("d_head", d)):
            fix(field, value, "W_Q")
        fix("n_kv_heads", dims("W_K", 4)[1], "W_K")
        if "W_pos" in host:
            fix("n_ctx", dims("W_pos", 2)[0], "W_pos")
        for field, value in shape.items():
            if field in ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_vocab",
                         "n_ctx") and value:
                fix(field, value, "the keywords")
        kw = {k: v for k, v in shape.items() if k not in inferred}
        kw.update({field: value for field, (value, _) in inferred.items()})
        parts = sorted({_PART_OF[name] for name in weights if name in _PART_OF})
        model = cls.create(parts=parts, **kw)
        try:
            config = model.config
            for name, value in host.items():
                model._check_stacked(name, value, config)
            for name, value in host.items():
                layered = name in _PER_HEAD | _PER_KV_HEAD | _PER_LAYER
                heads = (config["n_heads"] if name in _PER_HEAD else
                         config["n_kv_heads"] if name in _PER_KV_HEAD else 1)
                for layer in range(config["n_layers"] if layered else 1):
                    item = value.index(layer) if layered else value
                    for head in range(heads):
                        one = item.index(head) if name in _PER_HEAD | _PER_KV_HEAD else item
                        model.set_weight(name, one, layer, head)
            if process is not None:
                model.process(process)
        except BaseException:
            model.close()
            raise
        return model

    def _stacked_shape(self, name, config):
        """The stacked shape from_arrays and the stacked accessors use."""
        rows, cols = self._weight_shape(name)
        one = [cols] if name in _VECTORS else [rows, cols]
        if name in _PER_HEAD:
            return [config["n_layers"], config["n_heads"]] + one
        if name in _PER_KV_HEAD:
            return [config["n_layers"], config["n_kv_heads"]] + one
        if name in _PER_LAYER:
            return [config["n_layers"]] + one
        return one

    def _check_stacked(self, name, value, config):
        want = self._stacked_shape(name, config)
        if list(value.shape) != want:
            raise ValueError(f"{name}: expected shape {want}, got {list(value.shape)}")

    @classmethod
    def from_state_dict(cls, state_dict, cfg=None, process="fold_ln", positional=None,
                        n_heads=None) -> "Model":
        """A model from a state dict in memory: TransformerLens names and
        stacked shapes (``embed.W_E`` [V, D], ``blocks.{l}.attn.W_Q``
        [H, D, d], ``blocks.{l}.attn.W_O`` [H, d, D], ``blocks.{l}.attn.b_Q``
        [H, d], ``unembed.W_U`` [D, V], ...; ``_W_K``/``_W_V`` for grouped
        heads) or Hugging Face GPT-2 names (``wte.weight``,
        ``h.{l}.attn.c_attn.weight``, ...), values numpy arrays, torch
        tensors (CPU; float32/16/64, bfloat16) or anything :func:`host_array`
        reads. Buffers (attention masks, ``IGNORE``, GPT-2's ``attn.bias``)
        and non-float entries are skipped.

        ``cfg``: a dict, a path to a config.json, or any object with
        TransformerLens's config attribute names (``HookedTransformerConfig``
        itself, never imported) or GPT-2's; what it says is checked against
        the tensors by libmi's config.json reader, and a disagreement, a
        missing tensor or a wrong shape raises an MiError naming it. The
        tensors go to libmi as a safetensors image in memory, so every check
        of :meth:`load` applies (``model.layout`` is "transformerlens" or
        "gpt2")."""
        from .state_dict import safetensors_image
        image = safetensors_image(state_dict, cfg)
        return cls.load(image, n_heads=n_heads, positional=positional, process=process,
                        vocab=False)

    @reads
    def copy(self) -> "Model":
        """An independent copy (mi_model_copy): its own weights, processed as
        this model's are, and this model's vocabulary and tokenizer. Edit it
        with :meth:`set_weight` while the original stays as it was."""
        handle = ctypes.c_void_p()
        lib.mi_model_copy(ctypes.byref(handle), self._h())
        return Model(handle.value)

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
        after loading (None for raw weights; weights stay editable with
        :meth:`set_weight` either way). ``config=False`` ignores config.json
        (MI_LOAD_NO_CONFIG). ``vocab``: a vocabulary file to load; by default
        a folder's own, and for a file ``vocab.txt``, ``tokenizer.json`` or
        else ``vocab.json`` beside it when present (with the ``merges.txt``
        beside a vocab.json, or ``merges``, as its tokenizer:
        :meth:`load_tokenizer`); False loads none."""
        options = LoadOptions()
        lib.mi_load_options_init(ctypes.byref(options), ctypes.sizeof(options))
        options.n_heads = 0 if n_heads is None else size(n_heads, "n_heads")
        options.positional = _positional(positional)
        options.process = 0 if process is None else _steps(process)
        options.flags = (0 if config else LOAD_NO_CONFIG) | (LOAD_NO_VOCAB if vocab is False else 0)
        handle = ctypes.c_void_p()
        if isinstance(path, (bytes, bytearray, memoryview)):
            view = memoryview(path).cast("B")
            # bytes go in place; a writable buffer (the image from_state_dict
            # builds) too, without the copy bytes() would make.
            data = path if isinstance(path, bytes) else bytes(view) if view.readonly or \
                not len(view) else (ctypes.c_char * len(view)).from_buffer(view)
            lib.mi_model_load_memory(ctypes.byref(handle), data, len(view), ctypes.byref(options))
            model = cls(handle.value)
        else:
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"load: a path, a folder or bytes, not {type(path).__name__}")
            path = os.fspath(path)
            lib.mi_model_load(ctypes.byref(handle), os.fsencode(path), ctypes.byref(options))
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

    # ---- the handle ------------------------------------------------------------

    def _h(self) -> ctypes.c_void_p:
        return self._guard.pointer()

    def close(self) -> None:
        """Lets go of the model (idempotent) once no call on it is running:
        waits for calls on other threads; raises MiStateError from inside a
        callback of a call on this model. Circuits made from it keep it alive
        inside libmi until they are closed too."""
        self._guard.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._guard.closed

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<mi.Model closed>"
        c = self.config
        return (f"<mi.Model {c['n_layers']} layers x {c['n_heads']} heads, d_model "
                f"{c['d_model']}, d_head {c['d_head']}, d_vocab {c['d_vocab']}>")

    # ---- vocabulary and tokens ---------------------------------------------------

    @writes
    def load_vocab(self, path) -> None:
        """Loads token strings: vocab.json, tokenizer.json or one token a line."""
        lib.mi_model_load_vocab(self._h(), os.fsencode(os.fspath(path)))

    @writes
    def load_vocab_bytes(self, data: bytes) -> None:
        """Loads token strings from a vocabulary file's contents."""
        data = file_bytes(data, "vocabulary")
        lib.mi_model_load_vocab_memory(self._h(), data, len(data))

    @writes
    def load_tokenizer(self, vocab, merges=None) -> None:
        """Loads a tokenizer and its token strings: a vocab.json (or
        encoder.json) with its merges file, a tokenizer.json, or one token a
        line (mi_model_load_tokenizer). :meth:`load_vocab` of a tokenizer.json
        or a text file loads their tokenizer too."""
        lib.mi_model_load_tokenizer(self._h(), os.fsencode(os.fspath(vocab)),
                                    None if merges is None else os.fsencode(os.fspath(merges)))

    @writes
    def load_tokenizer_bytes(self, vocab: bytes, merges: Optional[bytes] = None) -> None:
        """:meth:`load_tokenizer` from the files' contents."""
        vocab = file_bytes(vocab, "vocab")
        merges = None if merges is None else file_bytes(merges, "merges")
        lib.mi_model_load_tokenizer_memory(self._h(), vocab, len(vocab), merges,
                                           0 if merges is None else len(merges))

    def _token_index(self, token_id) -> int:
        return index(token_id, self.config["d_vocab"], "token id")

    @reads
    def token_str(self, token_id: int) -> str:
        """A token's readable text (GPT-2's byte-level symbols decoded; bytes
        that are not UTF-8 are replaced). Negative ids count from the end."""
        pointer, length = ctypes.c_void_p(), ctypes.c_size_t()
        lib.mi_model_token_bytes(ctypes.byref(pointer), ctypes.byref(length), self._h(),
                                 self._token_index(token_id))
        if length.value == 0:
            return ""
        return ctypes.string_at(pointer.value, length.value).decode("utf-8", errors="replace")

    @reads
    def token_text(self, token_id: int) -> str:
        """The token's string as libmi gives it (mi_model_token_str; stops at
        a NUL byte: :meth:`token_str` does not)."""
        out = ctypes.c_char_p()
        lib.mi_model_token_str(ctypes.byref(out), self._h(), self._token_index(token_id))
        return out.value.decode("utf-8", errors="replace")

    @reads
    def token_id(self, text: str) -> int:
        """The id of a token's text (decoded or as the vocabulary file spells
        it). KeyError when no token has that text."""
        if not isinstance(text, str):
            raise TypeError(f"token_id: expected a str, not {type(text).__name__}")
        if "\0" in text:
            raise KeyError(text)
        out = ctypes.c_size_t()
        try:
            lib.mi_model_token_id(ctypes.byref(out), self._h(), text.encode())
        except MiError as e:
            if e.status == -7:  # MI_ERR_INDEX: not in the vocabulary
                raise KeyError(text) from None
            raise
        return out.value

    @reads
    def tokenize(self, text: Text, prepend_bos: bool = False) -> List[int]:
        """The token ids of ``text`` with the model's tokenizer. No
        beginning-of-sequence token unless ``prepend_bos`` (libmi's default
        everywhere; TransformerLens's is True: pass it to compare)."""
        handle = ctypes.c_void_p()
        lib.mi_model_tokenizer(ctypes.byref(handle), self._h())
        return _encode(handle, text, prepend_bos)

    def to_tokens(self, text, prepend_bos: bool = False):
        """TransformerLens's to_tokens: the ids of one text [n], or of a list
        of texts of one token length [B, n] (as arrays; ValueError when the
        lengths differ: libmi does not pad)."""
        return arrays.result(self._token_batch(text, prepend_bos).array) \
            if numpy is not None else self._token_batch(text, prepend_bos).nested()

    def tokens(self, tokens, prepend_bos: bool = False):
        """Token ids from text (tokenized) or from ids (as they are; then
        ``prepend_bos`` is not applied: the ids are taken as given)."""
        if _is_text(tokens) or isinstance(tokens, memoryview):
            return self.tokenize(tokens, prepend_bos)
        return tokens

    def to_str_tokens(self, tokens, prepend_bos: bool = False) -> List[str]:
        """The string of each token of ``tokens`` (text, tokenized first, or
        ids), as :meth:`token_str` gives it."""
        batch = self._token_batch(tokens, prepend_bos)
        return [self.token_str(t) for t in batch.ids.tolist()]

    def _one_token(self, token) -> int:
        """A token named by its id (negative counts from the end), or by its
        string (a vocabulary token, or text that is one token)."""
        if not _is_text(token):
            return self._token_index(token)
        if isinstance(token, str):
            try:
                return self.token_id(token)
            except KeyError:
                pass
        ids = self.tokenize(token)
        if len(ids) != 1:
            raise ValueError(f"{token!r} is {len(ids)} tokens, not one")
        return ids[0]

    def _token_batch(self, tokens, prepend_bos=False, name="tokens"):
        """Token ids as a checked :class:`_Batch`: text, a list of texts of one
        length, ids [n] or [B, n] (lists, numpy, torch)."""
        if _is_text(tokens) or isinstance(tokens, memoryview):
            ids = int_array(self.tokenize(tokens, prepend_bos), name, self.config["d_vocab"])
            return _Batch(ids, False)
        if isinstance(tokens, (list, tuple)) and tokens and all(_is_text(t) for t in tokens):
            rows = [self.tokenize(t, prepend_bos) for t in tokens]
            lengths = sorted({len(r) for r in rows})
            if len(lengths) > 1:
                raise ValueError(f"{name}: the prompts are {lengths} tokens long; a batch "
                                 "needs one length (libmi does not pad: run them apart)")
            return _Batch(int_array(rows, name, self.config["d_vocab"]), True)
        ids = int_array(tokens, name, self.config["d_vocab"])
        if 0 in ids.shape:
            raise ValueError(f"{name}: no tokens (shape {list(ids.shape)})")
        return _Batch(ids, len(ids.shape) == 2)

    # ---- shape and weights --------------------------------------------------------

    @property
    def config(self) -> dict:
        """The model's shape as a dict of mi_config's fields."""
        if self._config is None:
            self._config = self._read_config()
        return dict(self._config)

    @reads
    def _read_config(self) -> dict:
        config = Config()
        lib.mi_config_init(ctypes.byref(config), ctypes.sizeof(config))
        lib.mi_model_get_config(ctypes.byref(config), self._h())
        return {name: getattr(config, name) for name, _ in Config._fields_ if name != "struct_size"}

    @property
    def cfg(self):
        """The shape with TransformerLens's config names (n_layers, n_heads,
        d_model, d_head, d_vocab, n_ctx, n_key_value_heads, eps,
        positional_embedding_type, attn_only), as an attribute namespace."""
        from types import SimpleNamespace
        c = self.config
        return SimpleNamespace(n_layers=c["n_layers"], n_heads=c["n_heads"],
                               d_model=c["d_model"], d_head=c["d_head"],
                               d_vocab=c["d_vocab"], n_ctx=c["n_ctx"],
                               n_key_value_heads=c["n_kv_heads"], eps=c["ln_eps"],
                               positional_embedding_type=self.positional,
                               attn_only=not c["parts"] & PARTS["mlp"])

    @property
    def positional(self) -> str:
        """How positions enter: "standard", "shortformer" or "none"."""
        kind = self.config["positional"]
        return next(name for name, value in POSITIONAL.items() if value == kind)

    @property
    @reads
    def layout(self) -> str:
        """Where the weights came from: "memory", "transformerlens" or "gpt2"."""
        return LAYOUTS[lib.mi_model_layout(self._h())]

    @property
    @reads
    def processing(self) -> set:
        """The processing steps applied to the weights, as a set of names."""
        bits = lib.mi_model_processing(self._h())
        return {name for name, bit in PROCESS.items() if bit & (bit - 1) == 0 and bits & bit}

    def _layer(self, layer) -> int:
        return index(layer, self.config["n_layers"], "layer")

    def _head(self, head, kv=False) -> int:
        count = self.config["n_kv_heads" if kv else "n_heads"]
        return index(head, count, "kv head" if kv else "head")

    def _copy_index(self, name, layer, head):
        """(layer, head) of one copy of weight ``name``, checked, negative
        indices counted from the end; unused indices must be 0."""
        layered = name in _PER_HEAD | _PER_KV_HEAD | _PER_LAYER
        headed = name in _PER_HEAD | _PER_KV_HEAD
        layer = self._layer(layer) if layered else index(layer, 1, f"{name}'s layer (global)")
        head = self._head(head, name in _PER_KV_HEAD) if headed else \
            index(head, 1, f"{name}'s head (not per head)")
        return layer, head

    @reads
    def _weight_shape(self, name):
        rows, cols = ctypes.c_size_t(), ctypes.c_size_t()
        lib.mi_model_weight_shape(ctypes.byref(rows), ctypes.byref(cols), self._h(),
                                  _weight_id(name))
        return rows.value, cols.value

    @writes
    def set_weight(self, name: str, matrix, layer: int = 0, head: int = 0) -> None:
        """Copies one weight in (mi_model_set_weight): ``matrix`` of exactly
        the shape mi_model_set_weight's table gives (a vector for b_*, ln*;
        numpy, torch, buffers, lists; float16/32/64, bfloat16). On a processed
        model the value is taken as it is (processed form). ValueError names
        a wrong shape, TypeError a wrong type, IndexError a layer or head out
        of range (negative ones count from the end)."""
        which = _weight_id(name)
        layer, head = self._copy_index(name, layer, head)
        rows, cols = self._weight_shape(name)
        a = host_array(matrix, name)
        owner, address, row_stride = a.matrix(name, rows, cols, name in _VECTORS)
        lib.mi_model_set_weight(self._h(), which, layer, head, owner.dtype,
                                ctypes.c_void_p(address), row_stride)

    @writes
    def process(self, steps="fold_ln") -> None:
        """Folds LayerNorm / centres weights, once (mi_model_process). ``steps``:
        a name of PROCESS, a list of names, or the bits."""
        lib.mi_model_process(self._h(), _steps(steps))

    @reads
    def weight(self, name: str, layer: int = 0, head: int = 0):
        """One weight copy as the model now holds it (float32): [rows, cols]
        as mi_model_set_weight's table, vectors 1-D."""
        which = _weight_id(name)
        layer, head = self._copy_index(name, layer, head)
        rows, cols = self._weight_shape(name)
        vector = name in _VECTORS
        out = OutArray((cols,) if vector else (rows, cols), ctypes.c_float)
        lib.mi_model_get_weight(out.pointer, cols, self._h(), which, layer, head)
        return out.result()

    @reads
    def stacked(self, name: str):
        """Every copy of a weight stacked as TransformerLens stacks it:
        W_Q, W_O, b_Q [L, H, ...]; W_K, W_V, b_K, b_V [L, H, ...] with
        grouped key/value heads repeated for the query heads that read them
        (TransformerLens's W_K); b_O, ln1.* [L, D]; global ones as they are.
        A bias the model lacks comes back as zeros (what the forward pass
        adds)."""
        which = _weight_id(name)
        c = self.config
        try:
            rows, cols = self._weight_shape(name)
        except MiError as e:
            if e.status != -6 or name not in _VECTORS | {"W_pos"} or name == "W_pos":
                raise
            rows, cols = 1, (c["d_head"] if name in ("b_Q", "b_K", "b_V") else
                             c["d_vocab"] if name == "b_U" else c["d_model"])
            present = False
        else:
            present = True
        one = (cols,) if name in _VECTORS else (rows, cols)
        L, H = c["n_layers"], c["n_heads"]
        lead = (L, H) if name in _PER_HEAD | _PER_KV_HEAD else (L,) if name in _PER_LAYER else ()
        out = OutArray(lead + one, ctypes.c_float)
        if not present:
            ctypes.memset(out.address, 0, out.count * 4)
            return out.result()
        per = arrays.product(one)
        group = H // c["n_kv_heads"]
        for k in range(max(arrays.product(lead), 1)):
            layer = k // H if len(lead) == 2 else k if lead else 0
            head = k % H if len(lead) == 2 else 0
            if name in _PER_KV_HEAD:
                head //= group
            pointer = ctypes.cast(out.address + k * per * 4, ctypes.POINTER(ctypes.c_float))
            lib.mi_model_get_weight(pointer, cols, self._h(), which, layer, head)
        return out.result()

    def _stacked(name, shape):
        return property(lambda self: self.stacked(name), doc=f"{name} {shape} (see stacked).")

    W_E, W_pos, W_U = _stacked("W_E", "[V, D]"), _stacked("W_pos", "[n_ctx, D]"), \
        _stacked("W_U", "[D, V]")
    W_Q, W_O = _stacked("W_Q", "[L, H, D, d]"), _stacked("W_O", "[L, H, d, D]")
    W_K, W_V = _stacked("W_K", "[L, H, D, d]"), _stacked("W_V", "[L, H, D, d]")
    b_Q, b_K, b_V = _stacked("b_Q", "[L, H, d]"), _stacked("b_K", "[L, H, d]"), \
        _stacked("b_V", "[L, H, d]")
    b_O, b_U = _stacked("b_O", "[L, D]"), _stacked("b_U", "[V]")
    del _stacked

    @property
    def OV(self):
        """Every head's d_model × d_model OV matrix W_V W_O as a
        :class:`FactoredMatrix` [L, H, D, D] (A = W_V [.., D, d], B = W_O
        [.., d, D]); index it ``model.OV[l, h]``, ``[l]``, ``[:, h]``. Not
        :meth:`ov`, which is the vocabulary-sized token circuit
        W_E W_V W_O W_U. Needs numpy."""
        from .factored import FactoredMatrix
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self):
        """Every head's d_model × d_model QK matrix W_Q W_Kᵀ as a
        :class:`FactoredMatrix` [L, H, D, D] (A = W_Q, B = W_Kᵀ), biases and
        the 1/√d scale left out as in TransformerLens; ``model.QK[l, h]``.
        Not :meth:`qk`, the token × token circuit. Needs numpy."""
        from .factored import FactoredMatrix
        return FactoredMatrix(self.W_Q, numpy.swapaxes(self.W_K, -1, -2)
                              if numpy is not None else None)

    # ---- circuits -------------------------------------------------------------

    @reads
    def qk(self, layer: int, head: int, query: str = "token", key: str = "token",
           bias: bool = True, scale: bool = True) -> Circuit:
        """The QK circuit of head (layer, head): query side × key side scores
        [V or n_ctx, V or n_ctx], factored. ``query``/``key``: "token" (W_E)
        or "pos" (W_pos). ``bias`` adds b_Q and b_K to the factors and
        ``scale`` divides by √d_head, so with both the entries are the scores
        the forward pass puts into the softmax. For the d_model-sized
        W_Q W_Kᵀ see :attr:`QK`."""
        for side in (query, key):
            if side not in EMBEDDINGS:
                raise ValueError(f"unknown embedding {side!r}; one of {list(EMBEDDINGS)}")
        return Circuit._make(lib.mi_circuit_qk, self._h(), self._layer(layer), self._head(head),
                             EMBEDDINGS[query], EMBEDDINGS[key], _qk_flags(bias, scale))

    @reads
    def ov(self, layer: int, head: int) -> Circuit:
        """The token OV circuit W_E W_V W_O W_U [V, V] (source token × output
        logit), factored. For the d_model-sized W_V W_O see :attr:`OV`."""
        return Circuit._make(lib.mi_circuit_ov, self._h(), self._layer(layer), self._head(head))

    @reads
    def direct(self) -> Circuit:
        """The direct path W_E W_U [V, V] (input token × output logit)."""
        return Circuit._make(lib.mi_circuit_direct, self._h())

    def _heads(self, heads, what="heads"):
        if not isinstance(heads, (list, tuple)):
            raise TypeError(f"{what}: expected (layer, head) pairs, not {type(heads).__name__}")
        out = []
        for pair in heads:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise TypeError(f"{what}: expected (layer, head) pairs, got {pair!r}")
            out.append((self._layer(pair[0]), self._head(pair[1])))
        return out

    @reads
    def path(self, heads: Sequence[Tuple[int, int]] = ()) -> Circuit:
        """The OV product of the path through ``heads`` ((layer, head) pairs in
        increasing layers; empty: the direct path) as a circuit [V, V]
        (mi_circuit_path)."""
        pairs = self._heads(list(heads))
        n = len(pairs)
        layers = arrays.SizeArray([l for l, _ in pairs], (n,))
        hs = arrays.SizeArray([h for _, h in pairs], (n,))
        return Circuit._make(lib.mi_circuit_path, self._h(), n, layers.pointer, hs.pointer)

    @reads
    def k_composition_circuit(self, layer1: int, head1: int, layer2: int, head2: int,
                              bias: bool = True, scale: bool = True) -> Circuit:
        """W_E W_QK² (W_E W_OV¹)ᵀ [V, V]: query token × the token head 1 wrote
        into the key's stream; a strong diagonal for a previous-token head 1
        and an induction head 2."""
        return Circuit._make(lib.mi_circuit_k_composition, self._h(), self._layer(layer1),
                             self._head(head1), self._layer(layer2), self._head(head2),
                             _qk_flags(bias, scale))

    # ---- reports and scores -----------------------------------------------------

    @reads
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
        options.behaviour_sequences = size(behaviour_sequences, "behaviour_sequences")
        options.behaviour_half_length = size(behaviour_half_length, "behaviour_half_length")
        options.behaviour_seed = size(behaviour_seed, "behaviour_seed")
        config = self.config
        count = config["n_layers"] * config["n_heads"]
        lines = (_native.HeadReport * count)()
        lines[0].struct_size = ctypes.sizeof(_native.HeadReport)
        lib.mi_model_head_report(lines, count, self._h(), ctypes.byref(options))
        return [HeadReport(r.layer, r.head, EigenSummary._of(r.ov), EigenSummary._of(r.qk),
                           r.prev_token_share, r.prev_token_attention,
                           r.duplicate_token_attention, r.induction_attention) for r in lines]

    @reads
    def head_roles(self, report: Optional[dict] = None,
                   ov_top1: Optional[Sequence[float]] = None, **thresholds):
        """Every head's role by libmi's stated rule (mi_model_head_roles) and
        the induction heads' K-composition partners: ``(roles, partners)``.
        ``thresholds``: mi_role_options fields (min_attention=0.5,
        min_attention_lift=3, min_prev_share_lift=2, min_copying_score=0.5,
        min_copying_lift=50, min_k_composition_z=3); ``report``:
        mi_report_options fields (behaviour_sequences, ...); ``ov_top1``:
        None (each head's top-1 copying accuracy is computed), or one share
        a head in line order l·n_heads + h, e.g. the first of each pair
        ``skip_trigrams(copying_accuracy=True)`` returns, so that no OV
        circuit is streamed again."""
        options = _role_options(thresholds)
        c = self.config
        heads = c["n_layers"] * c["n_heads"]
        if ov_top1 is not None:
            shares = [float(x) for x in ov_top1]
            if len(shares) != heads:
                raise ValueError(f"ov_top1: {len(shares)} shares for {heads} heads")
            given = (ctypes.c_double * heads)(*shares)
            options.ov_top1 = ctypes.cast(given, _native.c_double_p)
            options.ov_top1_count = heads
        rep = _native.ReportOptions()
        lib.mi_report_options_init(ctypes.byref(rep), ctypes.sizeof(rep))
        if report is not None and not isinstance(report, dict):
            raise TypeError(f"report: a dict of mi_report_options fields, not "
                            f"{type(report).__name__}")
        _set_fields(rep, report or {}, "report option")
        options.report = ctypes.pointer(rep)
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

    @reads
    def skip_trigram_floor(self) -> float:
        """The skip-trigram noise floor sqrt(2 ln(L·H·d_vocab²)) (mi_model_skip_trigram_floor)."""
        out = ctypes.c_double()
        lib.mi_model_skip_trigram_floor(ctypes.byref(out), self._h())
        return out.value

    @reads
    def html_report(self, tokens: Optional[Sequence[int]] = None, trigrams: int = 24,
                    max_order: int = 2, top_parts: int = 12, title: Optional[str] = None,
                    **thresholds) -> str:
        """The self-contained HTML page of mi_model_html_report, as text (mi.html.report
        writes and shows it). ``tokens``: the prompt's ids, or None."""
        options = _native.HtmlOptions()
        lib.mi_html_options_init(ctypes.byref(options), ctypes.sizeof(options))
        keep = None
        if tokens is not None:
            keep = int_array(tokens, "tokens", self.config["d_vocab"], ndims=(1,))
            options.tokens, options.n_tokens = keep.pointer, keep.count
        options.trigrams = size(trigrams, "trigrams")
        options.max_order = size(max_order, "max_order")
        options.top_parts = size(top_parts, "top_parts")
        if title is not None:
            if not isinstance(title, str):
                raise TypeError(f"title: a str, not {type(title).__name__}")
            options.title = title.encode()
        roles = _role_options(thresholds)
        options.roles = ctypes.pointer(roles)
        chunks = []
        writer = _native.WRITE_FN(lambda data, size, user: chunks.append(
            ctypes.string_at(data, size)) or 0)
        lib.mi_model_html_report(self._h(), ctypes.byref(options), writer, None)
        del keep
        return b"".join(chunks).decode()

    @reads
    def skip_trigrams(self, count: int = 24, bias: bool = True, scale: bool = True,
                      outputs_per_source: int = 2, destinations_per_source: int = 2,
                      progress: Optional[Callable[[int, int], object]] = None,
                      copying_accuracy: bool = False):
        """The ``count`` strongest skip-trigrams over every head, best first
        (mi_model_skip_trigrams): QK (with ``bias``, ``scale``) and OV entries
        z-scored within their rows, each source's best outputs and
        destinations paired, each triple scored min(z_QK, z_OV).
        ``progress(done, total)`` is called after each block of rows.
        With ``copying_accuracy`` (and count > 0) it returns ``(triples,
        accuracy)``: accuracy[l·n_heads + h] is head (l, h)'s ``(top1, top5)``
        copying accuracy from the same OV pass, exactly
        ``ov(l, h).copying_accuracy()`` (for ``head_roles(ov_top1=...)``)."""
        options = _native.SkipTrigramOptions()
        lib.mi_skip_trigram_options_init(ctypes.byref(options), ctypes.sizeof(options))
        options.qk_flags = _qk_flags(bias, scale)
        options.outputs_per_source = size(outputs_per_source, "outputs_per_source")
        options.destinations_per_source = size(destinations_per_source,
                                               "destinations_per_source")
        # The callback cannot stop the search: its first exception is kept
        # and raised once libmi returns.
        watcher = _Callback(lambda done, total: progress(done, total))
        if progress is not None:
            callback = _native.PROGRESS_FN(lambda done, total, user: watcher(done, total))
            options.progress = callback
        count = size(count, "count")
        if copying_accuracy:
            if count == 0:
                raise ValueError("copying_accuracy needs count > 0: a search of 0 triples "
                                 "reads no circuit")
            heads = self.config["n_layers"] * self.config["n_heads"]
            top1, top5 = (ctypes.c_double * heads)(), (ctypes.c_double * heads)()
            options.ov_top1 = ctypes.cast(top1, _native.c_double_p)
            options.ov_top5 = ctypes.cast(top5, _native.c_double_p)
            options.ov_accuracy_count = heads
        out = (_native.SkipTrigram * max(count, 1))()
        out[0].struct_size = ctypes.sizeof(_native.SkipTrigram)
        found = ctypes.c_size_t()
        lib.mi_model_skip_trigrams(out, ctypes.byref(found), count, self._h(),
                                   ctypes.byref(options))
        watcher.check()
        triples = [SkipTrigram(t.layer, t.head, t.src, t.dst, t.out, t.qk_z, t.ov_z, t.score)
                   for t in out[:found.value]]
        if copying_accuracy:
            return triples, list(zip(top1, top5))
        return triples


    @reads
    def composition_scores(self, kind: str):
        """Every head's "Q", "K" or "V" composition score with every head of
        every later layer, [L, H, L, H] indexed [l1][h1][l2][h2] (0 where
        l2 ≤ l1)."""
        if kind not in COMPOSITIONS:
            raise ValueError(f"unknown composition {kind!r}; one of {list(COMPOSITIONS)}")
        config = self.config
        L, H = config["n_layers"], config["n_heads"]
        out = OutArray((L, H, L, H), ctypes.c_double)
        lib.mi_model_composition_scores(out.pointer, out.count, self._h(), COMPOSITIONS[kind])
        return out.result()

    @reads
    def composition_tables(self, kinds: str = "QKV"):
        """Several composition tables in one libmi call, which shares the
        earlier heads' Grams between kinds: [len(kinds), L, H, L, H], table t
        as composition_scores(kinds[t]) gives it (equal to rounding)."""
        for kind in kinds:
            if kind not in COMPOSITIONS:
                raise ValueError(f"unknown composition {kind!r}; one of {list(COMPOSITIONS)}")
        config = self.config
        L, H = config["n_layers"], config["n_heads"]
        out = OutArray((len(kinds), L, H, L, H), ctypes.c_double)
        codes = (ctypes.c_int * max(len(kinds), 1))(*[COMPOSITIONS[k] for k in kinds])
        lib.mi_model_composition_tables(out.pointer, out.count, self._h(), codes, len(kinds))
        return out.result()

    @reads
    def composition_baseline(self) -> Tuple[float, float, float]:
        """The chance level of a composition score for this model's shapes:
        (mean, standard deviation of one score, standard error of the mean)."""
        out = (ctypes.c_double * 3)()
        lib.mi_model_composition_baseline(out, self._h())
        return out[0], out[1], out[2]

    @reads
    def repeated_tokens(self, n_sequences: int, half: int, seed: int = 1):
        """Seeded random sequences of ``half`` tokens each repeated twice,
        [n_sequences, 2·half] (mi_model_repeated_tokens)."""
        n_sequences, half = size(n_sequences, "n_sequences"), size(half, "half")
        out = OutArray((n_sequences, 2 * half), ctypes.c_size_t)
        lib.mi_model_repeated_tokens(out.pointer, out.count, self._h(), n_sequences, half,
                                     size(seed, "seed"))
        return out.result()

    @reads
    def attention_scores(self, sequences, prepend_bos: bool = False):
        """Behavioural scores of every head over a batch of token sequences of
        one length ([B, n] ids, or texts), [L, H, 3]: previous-token,
        duplicate-token, induction."""
        batch = self._token_batch(sequences, prepend_bos, "sequences")
        B, n = batch.shape
        config = self.config
        out = OutArray((config["n_layers"], config["n_heads"], 3), ctypes.c_double)
        lib.mi_model_attention_scores(out.pointer, out.count, self._h(), batch.ids.pointer, B, n)
        return out.result()

    # ---- paths ------------------------------------------------------------------

    def _order(self, max_order):
        return SIZE_MAX if max_order is None else size(max_order, "max_order")

    @reads
    def path_count(self, max_order: Optional[int] = None) -> int:
        """How many paths have order ≤ max_order (None: all)."""
        out = ctypes.c_size_t()
        lib.mi_model_path_count(ctypes.byref(out), self._h(), self._order(max_order))
        return out.value

    @reads
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
        order = self._order(max_order)
        if top is not None:
            if callback is not None:
                raise ValueError("top and callback do not go together")
            top = size(top, "top")
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

    # ---- forward pass and attribution ----------------------------------------------

    def _ablation(self, ablate, ablation, reference, prepend_bos):
        """(scale, bias) arrays for mi_forward_extras, or (None, None)."""
        if ablate is None:
            return None, None
        if ablation not in ("zero", "mean"):
            raise ValueError(f"ablation must be 'zero' or 'mean', not {ablation!r}")
        c = self.config
        L, H, D = c["n_layers"], c["n_heads"], c["d_model"]
        heads = ablate.items() if isinstance(ablate, dict) else \
            [(pair, 0.0) for pair in self._heads(list(ablate), "ablate")]
        scale = (ctypes.c_float * (L * H))(*([1.0] * (L * H)))
        chosen = []
        for pair, value in heads:
            (l, h), = self._heads([pair], "ablate")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"ablate: the scale of head {pair} must be a number")
            scale[l * H + h] = float(value)
            chosen.append((l, h))
        if ablation == "zero":
            return scale, None
        if reference is None:
            raise ValueError("mean ablation needs reference tokens ([B, n] or a list of texts) "
                             "to take each head's mean output over")
        outs = self.head_outputs(reference, prepend_bos=prepend_bos, _raw=True)
        bias = (ctypes.c_float * (L * H * D))()
        count = outs.shape[0] * outs.shape[3]  # prompts × positions
        for l, h in chosen:
            for i in range(D):
                total = 0.0
                if numpy is not None:
                    total = float(outs.array[:, l, h, :, i].sum(dtype=numpy.float64))
                else:
                    B, n = outs.shape[0], outs.shape[3]
                    for b in range(B):
                        base = (((b * L + l) * H + h) * n) * D
                        total += sum(outs.array[base + t * D + i] for t in range(n))
                bias[(l * H + h) * D + i] = total / count
        return scale, bias

    def _run(self, batch, patterns=False, resid=False, head_out=False, scale=None, bias=None,
             logits=True):
        """mi_model_forward over a batch: OutArrays [B, n, V], [B, L, H, n, n],
        [B, L + 1, n, D], [B, L, H, n, D] (None where not asked)."""
        c = self.config
        L, H, D, V = c["n_layers"], c["n_heads"], c["d_model"], c["d_vocab"]
        B, n = batch.shape
        out = OutArray((B, n, V), ctypes.c_float) if logits else OutArray((1, n, V),
                                                                        ctypes.c_float)
        pat = OutArray((B, L, H, n, n), ctypes.c_float) if patterns else None
        res = OutArray((B, L + 1, n, D), ctypes.c_float) if resid else None
        hout = OutArray((B, L, H, n, D), ctypes.c_float) if head_out else None
        extras = _native.ForwardExtras()
        lib.mi_forward_extras_init(ctypes.byref(extras), ctypes.sizeof(extras))
        if scale is not None:
            extras.head_scale = ctypes.cast(scale, _native.c_float_p)
            extras.head_scale_count = L * H
        if bias is not None:
            extras.head_bias = ctypes.cast(bias, _native.c_float_p)
            extras.head_bias_count = L * H * D
        for b in range(B):
            if pat is not None:
                extras.patterns, extras.patterns_count = pat.at(b), L * H * n * n
            if res is not None:
                extras.resid, extras.resid_count = res.at(b), (L + 1) * n * D
            if hout is not None:
                extras.head_out, extras.head_out_count = hout.at(b), L * H * n * D
            lib.mi_model_forward(out.at(b if logits else 0), V, self._h(), batch.ids.at(b), n,
                                 ctypes.byref(extras))
        return out, pat, res, hout

    @reads
    def forward(self, tokens, patterns: bool = False, resid: bool = False,
                prepend_bos: bool = False, ablate=None, ablation: str = "zero",
                reference=None):
        """The logits of a token sequence, [n, V] float32, or of a batch,
        [B, n, V]: ``tokens`` ids [n] or [B, n] (lists, numpy, torch), text,
        or a list of texts of one token length (tokenized with
        ``prepend_bos``; prompts of different lengths are refused: libmi does
        not pad). With ``patterns`` or ``resid`` a :class:`Forward` with the
        attention patterns [L, H, n, n] and residual streams [L + 1, n, D]
        too (batched: [B, ...]).

        ``ablate``: heads to remove in this pass only, without copying the
        model: (layer, head) pairs, or a dict {(layer, head): scale}.
        ``ablation="zero"`` multiplies their outputs by 0 (or the scale);
        ``"mean"`` replaces them by their mean output over ``reference``
        tokens ([B, n], every prompt and position), TransformerLens's mean
        ablation."""
        batch = self._token_batch(tokens, prepend_bos)
        scale, bias = self._ablation(ablate, ablation, reference, prepend_bos)
        out, pat, res, _ = self._run(batch, patterns, resid, scale=scale, bias=bias)
        logits = batch.unbatch(out)
        if not patterns and not resid:
            return logits
        return Forward(logits, batch.unbatch(pat) if pat else None,
                       batch.unbatch(res) if res else None)

    __call__ = forward

    @reads
    def head_outputs(self, tokens, prepend_bos: bool = False, _raw: bool = False):
        """Each head's output as it enters the residual stream
        (TransformerLens's ``hook_result``), [L, H, n, D], batched
        [B, L, H, n, D]; they sum over heads, plus b_O, to each layer's
        change of the stream."""
        batch = self._token_batch(tokens, prepend_bos, "reference" if _raw else "tokens")
        _, _, _, hout = self._run(batch, head_out=True, logits=False)
        return hout if _raw else batch.unbatch(hout)

    @reads
    def loss(self, tokens, per_token: bool = False, prepend_bos: bool = False, ablate=None,
             ablation: str = "zero", reference=None):
        """Next-token cross-entropy (natural log) of ``tokens``, as
        TransformerLens's ``loss_fn``: with ``per_token`` [n − 1] (batched
        [B, n − 1]) — position t predicting token t + 1 — else the mean, a
        float. ``ablate``, ``ablation``, ``reference``: as :meth:`forward`.
        Computed in double from the float32 logits."""
        from .experiments import cross_entropy
        batch = self._token_batch(tokens, prepend_bos)
        if batch.shape[1] < 2:
            raise ValueError("loss: needs at least 2 tokens (position t predicts t + 1)")
        scale, bias = self._ablation(ablate, ablation, reference, prepend_bos)
        out, _, _, _ = self._run(batch, scale=scale, bias=bias)
        losses = cross_entropy(out, batch)
        if not per_token:
            flat = [x for row in losses for x in row]
            return sum(flat) / len(flat)
        if numpy is not None:
            arr = numpy.array(losses)
            return arrays.result(arr if batch.batched else arr[0])
        return losses if batch.batched else losses[0]

    @reads
    def test_prompt(self, prompt, answer, top_k: int = 10, prepend_bos: bool = False,
                    print_details: bool = True, file=None):
        """TransformerLens's ``utils.test_prompt``: runs ``prompt``, prints its
        tokens, the rank, logit and probability of ``answer`` (a token string,
        text that is one token, or an id) after the prompt's last token, and
        the ``top_k`` predictions there. Returns a :class:`PromptTest`."""
        from .experiments import test_prompt
        return test_prompt(prompt, answer, self, top_k, prepend_bos, print_details, file)

    @reads
    def attribute(self, tokens, positions: Optional[Sequence[int]] = None,
                  token: Union[None, int, str, Sequence[Union[int, str]]] = None,
                  vs: Union[None, int, str, Sequence[Union[int, str]]] = None,
                  max_order: Optional[int] = None, full_logits: bool = False,
                  callback: Optional[Callable[[Part], object]] = None,
                  prepend_bos: bool = False) -> List[Part]:
        """Splits the logits of ``tokens`` into parts, one per source and path
        (mi_model_attribute): with max_order None they sum to the forward
        logits. ``positions``: which positions (default all; negative count
        from the end); ``token``: the logit to report at each (one id for
        all, or one per position); ``vs``: a token to subtract (logit
        difference); ``full_logits``: every logit [positions, V]. Returns the
        parts, or with ``callback`` hands each to it (a true return stops)
        and returns those delivered. ``tokens`` may be text (tokenized with
        ``prepend_bos``), and ``token`` and ``vs`` strings (a token's string,
        or text that is one token). A batch [B, n] gives one list of parts
        per prompt (``token``/``vs`` then apply to each)."""
        batch = self._token_batch(tokens, prepend_bos)
        if batch.batched:
            return [self._attribute_one(batch.row(b), positions, token, vs, max_order,
                                        full_logits, callback)
                    for b in range(batch.shape[0])]
        return self._attribute_one(batch.ids, positions, token, vs, max_order, full_logits,
                                   callback)

    def _attribute_one(self, ids, positions, token, vs, max_order, full_logits, callback):
        n = ids.count
        options = _native.AttributionOptions()
        lib.mi_attribution_options_init(ctypes.byref(options), ctypes.sizeof(options))
        if max_order is not None:
            options.max_order = size(max_order, "max_order")
        keep = []
        n_positions = n
        if positions is not None:
            pos = int_array(positions, "positions", n, wrap=True, ndims=(1,))
            n_positions = pos.count
            if n_positions == 0:
                raise ValueError("positions: empty")
            options.positions, options.n_positions = pos.pointer, n_positions
            keep.append(pos)
        for name, value in (("logit_tokens", token), ("diff_tokens", vs)):
            if value is None:
                continue
            single = _is_text(value) or not isinstance(value, (list, tuple)) and \
                not hasattr(value, "__len__")
            values = [value] * n_positions if single else list(value)
            owner = arrays.SizeArray([self._one_token(v) for v in values], (len(values),))
            if owner.count != n_positions:
                raise ValueError(f"{owner.count} tokens for {n_positions} positions")
            setattr(options, name, owner.pointer)
            keep.append(owner)
        if full_logits:
            options.flags = ATTRIBUTE_FULL_LOGITS
        V = self.config["d_vocab"]
        listed = []

        def visit(pointer, user):
            p = pointer.contents
            k = p.n_positions
            part = Part(
                SOURCES[p.source], p.source_layer,
                tuple((p.layers[i], p.heads[i]) for i in range(p.order)),
                p.positions[:k] if p.positions else list(range(k)),
                _copy_out(p.token_logit, (k,), ctypes.c_double) if p.token_logit else None,
                _copy_out(p.logit_diff, (k,), ctypes.c_double) if p.logit_diff else None,
                _copy_out(p.logits, (k, V), ctypes.c_float) if p.logits else None)
            listed.append(part)
            return callback(part) if callback is not None else 0

        runner = _Callback(visit)
        fn = _native.ATTRIBUTION_FN(runner)
        lib.mi_model_attribute(None, self._h(), ids.pointer, n, ctypes.byref(options), fn, None)
        runner.check()
        return listed


class _Batch:
    """Checked token ids [B, n] (``batched`` False: one sequence, B = 1)."""

    def __init__(self, ids, batched):
        self.batched = batched
        self.ids = ids
        self.shape = ids.shape if batched else (1, ids.shape[0])
        ids.shape = self.shape

    def row(self, b):
        n = self.shape[1]
        return arrays.SizeArray(self.ids.tolist()[b * n:(b + 1) * n], (n,))

    def nested(self):
        flat = self.ids.tolist()
        return arrays.nest(flat, self.shape) if self.batched else flat

    @property
    def array(self):
        return self.ids.array.reshape(self.shape) if self.batched else self.ids.array

    def unbatch(self, out):
        """An OutArray [B, ...] as the caller's shape: [B, ...] for a batch,
        [...] for one sequence."""
        if out is None:
            return None
        if self.batched:
            return out.result()
        if numpy is not None:
            return arrays.result(out.array[0])
        flat = arrays.nest(out.array[:out.count], out.shape)[0]
        return arrays.result(flat) if arrays.get_output() == "torch" else flat
