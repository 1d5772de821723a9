"""One warning per kind of problem, so a bug or a gap never floods the user's output."""
from __future__ import annotations

import threading
import warnings

_seen: set[str] = set()
_lock = threading.Lock()


class TokmagicWarning(UserWarning):
    """Something tokmagic could not do; the user's own call went on unchanged."""


def warn_once(key: str, message: str) -> bool:
    """Warn with ``message`` unless a warning with ``key`` was already given."""
    with _lock:
        if key in _seen:
            return False
        _seen.add(key)
    warnings.warn(message, TokmagicWarning, stacklevel=3)
    return True
