"""Run a function when a module is imported, or now if it already is: capture patches an
HTTP library only once something imports it, so loading tokmagic imports none of them."""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from typing import Callable

_callbacks: dict[str, list[Callable]] = {}
_lock = threading.RLock()


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of a watched module so that its callbacks run after it executes."""

    def find_spec(self, name, path=None, target=None):
        if name not in _callbacks:
            return None
        # ask the other finders, without coming back here
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                exec_module(module)
                _fire(name, module)

            def __getattr__(self, attr):
                return getattr(loader, attr)

        spec.loader = _Loader()
        return spec


_finder = _Finder()


def _fire(name: str, module) -> None:
    with _lock:
        callbacks = list(_callbacks.get(name, ()))
    for callback in callbacks:
        callback(module)


def when_imported(name: str, callback: Callable) -> None:
    """Call ``callback(module)`` now if ``name`` is imported, else right after its import."""
    with _lock:
        _callbacks.setdefault(name, []).append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    module = sys.modules.get(name)
    if module is not None:
        callback(module)


def forget_all() -> None:
    """Drop every pending callback and the import finder."""
    with _lock:
        _callbacks.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
