"""The only place that patches anything: install() wraps each supported HTTP library as
it is imported, uninstall() restores them. Both are safe to call twice."""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from . import aiohttp as _aiohttp
from . import httpx as _httpx
from . import threads as _threads
from . import urllib3 as _urllib3
from .imports import forget_all, when_imported

#: One capture module per HTTP library, each with MODULES, patch(module), unpatch(module).
_LIBRARIES = (_httpx, _urllib3, _aiohttp)

_lock = threading.Lock()
#: Whether install() was called (and uninstall() not since), and how many held() blocks
#: run: the libraries stay patched while either says so.
_installed = False
_holds = 0


def _patch() -> None:
    _threads.patch()
    for library in _LIBRARIES:
        for name in library.MODULES:
            when_imported(name, library.patch)


def _unpatch() -> None:
    forget_all()
    _threads.unpatch()
    for library in _LIBRARIES:
        for name in library.MODULES:
            module = sys.modules.get(name)
            if module is not None:
                library.unpatch(module)


def install() -> None:
    """Start capturing LLM calls made through httpx2, httpx, urllib3 (requests, botocore)
    and aiohttp, now and when each is imported."""
    global _installed
    with _lock:
        if not _installed and not _holds:
            _patch()
        _installed = True


def uninstall() -> None:
    """Stop capturing and restore every patched method (once no held() block runs)."""
    global _installed
    with _lock:
        if _installed and not _holds:
            _unpatch()
        _installed = False


@contextmanager
def held() -> Iterator[None]:
    """Capture during the block, leaving capture as it was after it: tokmagic.track()
    in a script, or after ``%unload_ext``, does not turn capture on for good."""
    global _holds
    with _lock:
        if not _installed and not _holds:
            _patch()
        _holds += 1
    try:
        yield
    finally:
        with _lock:
            _holds -= 1
            if not _installed and not _holds:
                _unpatch()


def installed() -> bool:
    """Whether install() turned capture on (a held() block alone does not count)."""
    return _installed
