"""The only place that patches anything: install() wraps each supported HTTP library as
it is imported, uninstall() restores them. Both are safe to call twice."""
from __future__ import annotations

import sys
import threading

from . import httpx as _httpx
from .imports import forget_all, when_imported

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Start capturing LLM calls made through httpx2 and httpx (now and when imported)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        for name in _httpx.MODULES:
            when_imported(name, _httpx.patch)


def uninstall() -> None:
    """Stop capturing and restore every patched method."""
    global _installed
    with _lock:
        if not _installed:
            return
        _installed = False
        forget_all()
        for name in _httpx.MODULES:
            module = sys.modules.get(name)
            if module is not None:
                _httpx.unpatch(module)


def installed() -> bool:
    return _installed
