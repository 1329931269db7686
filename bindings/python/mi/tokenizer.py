"""Text to token ids (mi_tokenizer): byte-level BPE and word-level vocabularies."""

import ctypes
import os
import weakref
from typing import List, Optional, Sequence, Union

from ._native import lib
from .arrays import index
from .lifetime import Guard, reads
from .enums import TOKENIZE_PREPEND_BOS as PREPEND_BOS

Text = Union[str, bytes, bytearray, memoryview]


def text_bytes(text: Text) -> bytes:
    """A text's bytes: str as UTF-8, its lone surrogates (what
    ``bytes.decode('utf-8', 'surrogateescape')`` makes of invalid bytes) back
    to those bytes; bytes as they are."""
    if isinstance(text, str):
        return text.encode("utf-8", "surrogateescape")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"expected text (str or bytes), got {type(text).__name__}")


def file_bytes(data, what) -> bytes:
    """A file's contents given as bytes or a buffer (never an int, which
    bytes() would take as a length)."""
    if data is None or isinstance(data, (int, str)):
        raise TypeError(f"{what}: the file's bytes, not {type(data).__name__}")
    return bytes(data)


def encode(handle, text: Text, prepend_bos: bool) -> List[int]:
    """mi_tokenizer_encode into a buffer that always suffices (len + 1)."""
    data = text_bytes(text)
    capacity = len(data) + 1
    out = (ctypes.c_size_t * capacity)()
    count = ctypes.c_size_t()
    lib.mi_tokenizer_encode(out, capacity, ctypes.byref(count), handle, data, len(data),
                            PREPEND_BOS if prepend_bos else 0)
    return out[:count.value]


def _paths(vocab, merges):
    return os.fspath(vocab).encode(), None if merges is None else os.fspath(merges).encode()


class Tokenizer:
    """A tokenizer on its own (mi_tokenizer), without a model. Free it with
    ``close()`` or a ``with`` block; the finaliser frees it otherwise."""

    def __init__(self, handle: int):
        self._guard = Guard(handle, lambda h: lib.mi_tokenizer_free(ctypes.c_void_p(h)),
                            "tokenizer")
        self._finalizer = weakref.finalize(self, self._guard.close)

    @classmethod
    def load(cls, vocab, merges=None) -> "Tokenizer":
        """From a vocab.json (or encoder.json) and its merges file
        (merges.txt, vocab.bpe), a tokenizer.json, or a text file of one token
        a line (mi_tokenizer_load)."""
        handle = ctypes.c_void_p()
        lib.mi_tokenizer_load(ctypes.byref(handle), *_paths(vocab, merges))
        return cls(handle.value)

    @classmethod
    def from_bytes(cls, vocab: bytes, merges: Optional[bytes] = None) -> "Tokenizer":
        """The same from the files' contents (mi_tokenizer_load_memory)."""
        vocab = file_bytes(vocab, "vocab")
        merges = None if merges is None else file_bytes(merges, "merges")
        handle = ctypes.c_void_p()
        lib.mi_tokenizer_load_memory(ctypes.byref(handle), vocab, len(vocab), merges,
                                     0 if merges is None else len(merges))
        return cls(handle.value)

    def _h(self) -> ctypes.c_void_p:
        return self._guard.pointer()

    def close(self) -> None:
        """Frees the tokenizer (idempotent) once no call on it is running."""
        self._guard.close()

    def __enter__(self) -> "Tokenizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @reads
    def encode(self, text: Text, prepend_bos: bool = False) -> List[int]:
        """The token ids of ``text`` (str, or bytes that need not be UTF-8);
        with ``prepend_bos`` the beginning-of-sequence token first."""
        return encode(self._h(), text, prepend_bos)

    @reads
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for."""
        pointer, length = ctypes.c_void_p(), ctypes.c_size_t()
        lib.mi_tokenizer_token_bytes(ctypes.byref(pointer), ctypes.byref(length), self._h(),
                                     index(token_id, self.vocab_size, "token id"))
        return ctypes.string_at(pointer.value, length.value) if length.value else b""

    def decode(self, ids: Sequence[int]) -> bytes:
        """The bytes of a sequence of ids, concatenated (the text again, for
        byte-level BPE)."""
        return b"".join(self.token_bytes(i) for i in ids)

    @property
    @reads
    def bos(self) -> int:
        """The beginning-of-sequence token's id (MiError when there is none)."""
        out = ctypes.c_size_t()
        lib.mi_tokenizer_bos(ctypes.byref(out), self._h())
        return out.value

    @property
    @reads
    def vocab_size(self) -> int:
        """One past the largest token id."""
        out = ctypes.c_size_t()
        lib.mi_tokenizer_vocab_size(ctypes.byref(out), self._h())
        return out.value
