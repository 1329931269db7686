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

from ._native import Config, MiError, lib
from ._arrays import as_matrix, OutMatrix, numpy

__all__ = ["Model", "MiError", "version", "PARTS", "WEIGHTS", "PROCESS"]
__version__ = lib.mi_version_string().decode()

#: mi_weight names, in enum order.
WEIGHTS = ["W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O",
           "W_U", "b_U", "ln1.w", "ln1.b", "ln_final.w", "ln_final.b"]
#: MI_PART_* bits by name.
PARTS = {"pos_embed": 1, "qkv_bias": 2, "out_bias": 4, "unembed_bias": 8,
         "ln": 16, "ln_final": 32, "mlp": 64}
#: MI_PROCESS_* bits by name.
PROCESS = {"fold_ln": 1, "center_writing": 2, "center_unembed": 4, "transformerlens": 7}
_LAYOUTS = {0: "memory", 1: "transformerlens", 2: "gpt2"}
_PER_HEAD = {"W_Q", "W_O", "b_Q"}
_PER_KV_HEAD = {"W_K", "W_V", "b_K", "b_V"}
_PER_LAYER = {"b_O", "ln1.w", "ln1.b"}


def version():
    """The loaded libmi's version string."""
    return lib.mi_version_string().decode()


def _weight_id(name):
    try:
        return WEIGHTS.index(name)
    except ValueError:
        raise ValueError(f"unknown weight {name!r}; one of {WEIGHTS}") from None


def _steps(process):
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

    def __init__(self, handle):
        self._handle = ctypes.c_void_p(handle)

    @classmethod
    def create(cls, n_layers, n_heads, d_model, d_head, d_vocab, n_ctx=0, n_kv_heads=0,
               parts=(), ln_eps=1e-5):
        """A model of this shape with zero weights (mi_model_create). ``parts``
        names optional parts: any of PARTS' keys."""
        config = Config()
        lib.mi_config_init(ctypes.byref(config))
        config.n_layers, config.n_heads, config.n_kv_heads = n_layers, n_heads, n_kv_heads
        config.d_model, config.d_head, config.d_vocab, config.n_ctx = d_model, d_head, d_vocab, n_ctx
        config.ln_eps = ln_eps
        for part in parts:
            if part not in PARTS:
                raise ValueError(f"unknown part {part!r}; one of {list(PARTS)}")
            config.parts |= PARTS[part]
        handle = ctypes.c_void_p()
        lib.mi_model_create(ctypes.byref(handle), ctypes.byref(config))
        return cls(handle.value)

    @classmethod
    def from_arrays(cls, weights, process="fold_ln", **shape):
        """A model from a dict of weights named as in WEIGHTS. Per-head
        weights are indexed ``[layer][head]``, per-layer ones ``[layer]``
        (numpy arrays [L, H, rows, cols] or nested lists both work). The parts
        follow from which weights are given; ``shape`` gives mi_config's sizes."""
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

    def _h(self):
        if not self._handle.value:
            raise ValueError("the model is closed")
        return self._handle

    def close(self):
        """Frees the model now (idempotent)."""
        if getattr(self, "_handle", None) is not None and self._handle.value:
            lib.mi_model_free(self._handle)
            self._handle = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    @property
    def config(self):
        """The model's shape as a dict of mi_config's fields."""
        config = Config()
        lib.mi_config_init(ctypes.byref(config))
        lib.mi_model_get_config(ctypes.byref(config), self._h())
        return {name: getattr(config, name) for name, _ in Config._fields_ if name != "struct_size"}

    @property
    def layout(self):
        """Where the weights came from: "memory", "transformerlens" or "gpt2"."""
        return _LAYOUTS[lib.mi_model_layout(self._h())]

    @property
    def processing(self):
        """The processing steps applied to the weights, as a set of names."""
        bits = lib.mi_model_processing(self._h())
        return {name for name, bit in PROCESS.items() if bit & (bit - 1) == 0 and bits & bit}

    def set_weight(self, name, matrix, layer=0, head=0):
        """Copies one weight copy in (mi_model_set_weight)."""
        m = as_matrix(matrix)
        lib.mi_model_set_weight(self._h(), _weight_id(name), layer, head, m.dtype,
                                m.pointer, m.row_stride)

    def process(self, steps="fold_ln"):
        """Folds LayerNorm / centres weights, once (mi_model_process). ``steps``:
        a name of PROCESS, a list of names, or the bits."""
        lib.mi_model_process(self._h(), _steps(steps))

    def weight(self, name, layer=0, head=0):
        """One weight copy as the model now holds it (float32): a numpy array,
        or nested lists without numpy; vectors come back 1-D."""
        rows, cols = ctypes.c_size_t(), ctypes.c_size_t()
        which = _weight_id(name)
        lib.mi_model_weight_shape(ctypes.byref(rows), ctypes.byref(cols), self._h(), which)
        out = OutMatrix(rows.value, cols.value)
        lib.mi_model_get_weight(out.pointer, cols.value, self._h(), which, layer, head)
        vector = name.startswith("b_") or name.startswith("ln")
        return out.result(vector=vector)
