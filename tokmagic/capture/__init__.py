"""The only place that patches anything: install() wraps each supported HTTP library as
it is imported, uninstall() restores them. Both are safe to call twice."""
from __future__ import annotations

import sys
import threading

from . import aiohttp as _aiohttp
from . import httpx as _httpx
from . import threads as _threads
from . import urllib3 as _urllib3
from .imports import forget_all, when_imported

#: One capture module per HTTP library, each with MODULES, patch(module), unpatch(module).
_LIBRARIES = (_httpx, _urllib3, _aiohttp)

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Start capturing LLM calls made through httpx2, httpx, urllib3 (requests, botocore)
    and aiohttp, now and when each is imported."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        _threads.patch()
        for library in _LIBRARIES:
            for name in library.MODULES:
                when_imported(name, library.patch)


def uninstall() -> None:
    """Stop capturing and restore every patched method."""
    global _installed
    with _lock:
        if not _installed:
            return
        _installed = False
        forget_all()
        _threads.unpatch()
        for library in _LIBRARIES:
            for name in library.MODULES:
                module = sys.modules.get(name)
                if module is not None:
                    library.unpatch(module)


def installed() -> bool:
    return _installed
