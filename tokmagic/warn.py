"""One warning per kind of problem, so a bug or a gap never floods the user's output."""
from __future__ import annotations

import os
import sys
import sysconfig
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
    warnings.warn(message, TokmagicWarning, stacklevel=_user_level())
    return True


_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIBRARIES = tuple({sysconfig.get_path(name) + os.sep for name in ("stdlib", "platstdlib", "purelib", "platlib")})


def _user_level() -> int:
    """The stacklevel of the user's own code that led here (a notebook cell, a script),
    so the warning names that line rather than tokmagic's; else of the first frame
    outside tokmagic."""
    frame, level, outside = sys._getframe(2), 2, None
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_OWN):
            if not name.startswith(_LIBRARIES) and not name.startswith("<frozen"):
                return level
            outside = outside or level
        frame, level = frame.f_back, level + 1
    return outside or 2
