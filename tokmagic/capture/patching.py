"""Replace a method with tokmagic's wrapper and put the original back: the one way the
capture modules patch a class, so that a second patch changes nothing and an unpatch
never removes a wrapper someone else put over ours."""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Callable

from ..warn import warn_once

_MARK = "__tokmagic_original__"


def wrap(cls: type, name: str, make: Callable[[Callable], Callable]) -> None:
    """Set ``cls.name`` to ``make(original)`` unless tokmagic's wrapper is already there."""
    current = cls.__dict__[name]
    if getattr(current, _MARK, None) is not None:
        return
    wrapper = functools.wraps(current)(make(current))
    setattr(wrapper, _MARK, current)
    setattr(cls, name, wrapper)


def unwrap(cls: type, name: str) -> None:
    """Restore ``cls.name``, but only where it still holds tokmagic's wrapper."""
    original = getattr(cls.__dict__.get(name), _MARK, None)
    if original is not None:
        setattr(cls, name, original)


def cannot_patch(module: ModuleType, exc: BaseException | None = None) -> None:
    """Say once that calls through ``module`` will not be recorded, and why."""
    version = getattr(module, "__version__", "?")
    why = f" ({exc!r})" if exc is not None else ""
    warn_once(f"patch:{module.__name__}:{version}",
              f"tokmagic: cannot capture calls made through {module.__name__} {version}{why}; "
              "they run as usual but are not recorded. Please report this with that version.")
