"""Handles that are never freed while a libmi call on them is in flight.

ctypes releases the GIL during every libmi call, so another thread may call
``close()`` (or load a vocabulary) while a forward pass runs, and a callback
of ``paths`` or ``attribute`` may call ``close()`` on the model being
walked. Each handle therefore counts the calls using it, per thread:

- reads (every query) run together, from any number of threads;
- writes (``set_weight``, ``process``, loading a vocabulary or tokenizer)
  and ``close()`` wait until no other thread is using the handle, and run
  alone;
- a write or ``close()`` from inside a call on the same handle (a callback)
  would free or change what that call is reading: it raises
  :class:`MiStateError` instead of waiting for itself.
"""

import ctypes
import functools
import threading

from .enums import STATUS
from .errors import MiStateError


class Guard:
    """The in-flight calls on one libmi handle (see the module docstring)."""

    def __init__(self, handle, free, what):
        self.handle, self._free, self._what = handle, free, what
        self._cond = threading.Condition()
        self._readers = {}   # thread id -> depth of calls on this handle
        self._writer = None  # thread id of the write in progress
        self._depth = 0      # nested writes of that thread

    @property
    def closed(self):
        return not self.handle

    def _refuse(self, action):
        return MiStateError(STATUS["state"], "wrong state",
                            f"{action} the {self._what} from inside a call on it (a callback "
                            f"of paths, attribute or skip_trigrams): the call is still reading "
                            f"it; do it after the call returns")

    def _check_open(self):
        if not self.handle:
            raise ValueError(f"the {self._what} is closed")

    def pointer(self):
        """The handle as a ctypes pointer; ValueError once closed."""
        self._check_open()
        return ctypes.c_void_p(self.handle)

    def enter_read(self):
        me = threading.get_ident()
        with self._cond:
            while self._writer not in (None, me):
                self._cond.wait()
            self._check_open()
            self._readers[me] = self._readers.get(me, 0) + 1

    def exit_read(self):
        me = threading.get_ident()
        with self._cond:
            left = self._readers[me] - 1
            if left:
                self._readers[me] = left
            else:
                del self._readers[me]
                self._cond.notify_all()

    def enter_write(self, action):
        me = threading.get_ident()
        with self._cond:
            if me in self._readers and self._writer != me:
                raise self._refuse(action)
            while self._writer not in (None, me) or any(t != me for t in self._readers):
                self._cond.wait()
            self._check_open()
            self._writer = me
            self._depth += 1

    def exit_write(self):
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._writer = None
                self._cond.notify_all()

    def close(self):
        """Frees the handle once no call uses it (idempotent)."""
        me = threading.get_ident()
        with self._cond:
            if not self.handle:
                return
            if me in self._readers or self._writer == me:
                raise self._refuse("close()")
            while self._writer is not None or self._readers:
                self._cond.wait()
            handle, self.handle = self.handle, None
            self._cond.notify_all()
        self._free(handle)


def reads(method):
    """Runs a method as a read of ``self._guard``."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        guard = self._guard
        guard.enter_read()
        try:
            return method(self, *args, **kwargs)
        finally:
            guard.exit_read()
    return wrapper


def writes(method):
    """Runs a method as a write of ``self._guard``."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        guard = self._guard
        guard.enter_write(method.__name__ + "()")
        try:
            return method(self, *args, **kwargs)
        finally:
            guard.exit_write()
    return wrapper
