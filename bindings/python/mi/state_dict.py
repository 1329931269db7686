"""State dicts in memory to libmi: a safetensors image of the tensors, with
the configuration as a config.json in its __metadata__, loaded by
mi_model_load_memory. libmi's own name maps (TransformerLens, GPT-2) and
config.json reader then check every name, shape and size exactly as they do
for files, so there is one implementation of each rule, in C."""

import ctypes
import json
import os

from .arrays import host_array, is_tensor
from .enums import DTYPE_BF16, DTYPE_F16, DTYPE_F32, DTYPE_F64

_SAFETENSORS_DTYPE = {DTYPE_F32: "F32", DTYPE_F64: "F64", DTYPE_F16: "F16", DTYPE_BF16: "BF16"}

#: config fields passed on: TransformerLens's, then Hugging Face GPT-2's
#: (libmi's config.json reader knows these; others are dropped).
CONFIG_FIELDS = ["n_layers", "n_heads", "n_key_value_heads", "d_model", "d_head", "d_vocab",
                 "n_ctx", "eps", "normalization_type", "positional_embedding_type",
                 "attn_only", "model_type", "n_layer", "n_head", "n_embd", "n_positions",
                 "vocab_size", "layer_norm_epsilon"]

#: Name endings of buffers, not weights: TransformerLens's attention masks,
#: GPT-2's causal-mask buffers.
BUFFER_SUFFIXES = (".attn.mask", ".attn.IGNORE", ".attn.bias", ".attn.masked_bias",
                   ".rotary_sin", ".rotary_cos")


def config_dict(cfg) -> dict:
    """``cfg`` (None, a dict, a config.json path, or an object with
    TransformerLens's or GPT-2's config attribute names) as a dict of the
    fields libmi reads, JSON values only."""
    if cfg is None:
        return {}
    if isinstance(cfg, (str, os.PathLike)):
        with open(cfg, encoding="utf-8") as f:
            cfg = json.load(f)
        if not isinstance(cfg, dict):
            raise ValueError(f"{cfg}: a config.json must hold a JSON object")
    if isinstance(cfg, (int, float, bytes, bytearray, list, tuple)):
        raise TypeError(f"cfg: a dict, a config.json path or a config object, not "
                        f"{type(cfg).__name__}")
    if isinstance(cfg, dict):
        get = cfg.get
    else:
        def get(name):
            return getattr(cfg, name, None)
    out = {}
    for name in CONFIG_FIELDS:
        value = get(name)
        if value is None or callable(value):
            continue
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()  # a numpy or torch scalar
        if not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"cfg.{name}: {type(value).__name__} is not a config value")
        out[name] = value
    return out


def _tensors(state_dict):
    """(name, HostArray) of the float tensors of a state dict, buffers skipped."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"from_state_dict: a mapping of names to tensors, not "
                        f"{type(state_dict).__name__}")
    out = []
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"from_state_dict: names must be str, got {name!r}")
        if name.endswith(BUFFER_SUFFIXES) or name.startswith("hook_") or ".hook_" in name:
            continue
        if is_tensor(value) and not (value.is_floating_point()):
            continue  # integer and bool buffers
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if kind is not None and kind not in "f":
            continue  # numpy non-float arrays
        out.append((name, host_array(value, name)))
    return out


def safetensors_image(state_dict, cfg) -> bytearray:
    """The safetensors bytes of a state dict, its config under __metadata__
    "config" (one copy of every tensor, into the image)."""
    tensors = _tensors(state_dict)
    header, offset = {}, 0
    for name, a in tensors:
        nbytes = a.itemsize
        for n in a.shape:
            nbytes *= n
        header[name] = {"dtype": _SAFETENSORS_DTYPE[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    metadata = {"config": json.dumps(config_dict(cfg))}
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    image = bytearray(8 + len(text) + offset)
    image[:8] = len(text).to_bytes(8, "little")
    image[8:8 + len(text)] = text
    base = 8 + len(text)
    view = (ctypes.c_char * len(image)).from_buffer(image)
    start = ctypes.addressof(view)
    for name, a in tensors:
        lo, hi = header[name]["data_offsets"]
        if a.contiguous():
            ctypes.memmove(start + base + lo, a.address, hi - lo)
        else:
            image[base + lo:base + hi] = a.tobytes()
    del view
    return image
