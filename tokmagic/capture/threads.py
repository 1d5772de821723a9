"""Carry the caller's scope (cell and tag) into the threads and executor jobs it starts,
so their calls count for the cell that started them, and not for whichever cell happens
to run when they finish. asyncio tasks need nothing: they copy the context."""
from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from ..monitor import _scope, session

_MARK = "__tokmagic_original__"


def _start(original):
    @functools.wraps(original)
    def start(self, *args, **kwargs):
        try:
            self.tokmagic_scope = session.scope
        except Exception:  # a Thread subclass with __slots__: the thread stays unattributed
            pass
        return original(self, *args, **kwargs)
    return start


def _submit(original):
    @functools.wraps(original)
    def submit(self, fn, /, *args, **kwargs):
        scope = session.scope

        def in_scope(*a, **kw):
            token = _scope.set(scope)
            try:
                return fn(*a, **kw)
            finally:
                _scope.reset(token)
        return original(self, in_scope, *args, **kwargs)
    return submit


_PATCHES = ((threading.Thread, "start", _start), (ThreadPoolExecutor, "submit", _submit))


def patch() -> None:
    for cls, name, wrap in _PATCHES:
        current = cls.__dict__[name]
        if getattr(current, _MARK, None) is None:
            wrapper = wrap(current)
            setattr(wrapper, _MARK, current)
            setattr(cls, name, wrapper)


def unpatch() -> None:
    for cls, name, _ in _PATCHES:
        original = getattr(cls.__dict__.get(name), _MARK, None)
        if original is not None:
            setattr(cls, name, original)
