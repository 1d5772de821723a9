"""Replace a method with tokmagic's wrapper and put the original back: the one way the
capture modules patch a class, so that a second patch changes nothing and an unpatch
never removes a wrapper someone else put over ours.

Most calls through a wrapped method are none of tokmagic's business, and a wrapper that
only passes them on costs little only if it takes its parameters as the method does:
packing them into ``*args, **kwargs`` and out again costs more than everything else such
a call pays (about 1 µs for urllib3's ``_make_request``, which is passed nine keywords).
So a capture module gives two wrappers: one that spells out the parameters of the method
as it was written against, used where the installed method takes exactly those (and with
the method's own default values), and a generic one for any other version."""
from __future__ import annotations

import functools
import itertools
import types
from types import ModuleType
from typing import Callable

from ..warn import warn_once

_MARK = "__tokmagic_original__"
_STAR_ARGS = 0x04 | 0x08  # CO_VARARGS | CO_VARKEYWORDS

#: Every spelling of POST, for libraries that pass the method on as the caller wrote it:
#: one set lookup tells the other methods apart without upper-casing them.
POST = frozenset(map("".join, itertools.product(*zip("POST", "post"))))

Make = Callable[[Callable], Callable]


def wrap(cls: type, name: str, make: Make, generic: Make | None = None) -> None:
    """Set ``cls.name`` to tokmagic's wrapper unless it is already there.

    The wrapper is ``make(original)``. With ``generic`` given, that one must spell out the
    original's parameters: it is used only where the installed method takes the very same
    (then with its defaults), and ``generic(original)`` everywhere else."""
    current = cls.__dict__[name]
    if getattr(current, _MARK, None) is None:
        setattr(cls, name, wrapper_for(current, make, generic))


def wrapper_for(original: Callable, make: Make, generic: Make | None = None) -> Callable:
    """``make(original)``, or ``generic(original)`` where ``original`` takes other
    parameters than that spells out (see wrap), named as the original and marked as ours."""
    wrapper = make(original)
    if generic is not None:
        if same_parameters(wrapper, original):
            wrapper.__defaults__, wrapper.__kwdefaults__ = original.__defaults__, original.__kwdefaults__
        else:
            wrapper = generic(original)
    wrapper = functools.wraps(original)(wrapper)
    setattr(wrapper, _MARK, original)
    return wrapper


#: Method name -> (exact wrapper maker, generic wrapper maker), as wrap() takes them.
Hooks = dict[str, tuple[Make, Make]]


def watching(registry: dict[type, type], cls: type, hooks: Hooks) -> type:
    """The subclass of ``cls`` with ``hooks`` around its methods, made once per class and
    kept in ``registry``. It adds no slots, so an object's class can be swapped for it
    (and back, see restore): only the objects of an LLM response pay for the hooks."""
    watched = registry.get(cls)
    if watched is None:
        methods = {name: wrapper_for(getattr(cls, name), make, generic) for name, (make, generic) in hooks.items()}
        watched = registry[cls] = type(cls.__name__, (cls,), {"__slots__": (), **methods})
        watched.__qualname__ = cls.__qualname__
    return watched


def restore(registry: dict[type, type], obj: object) -> None:
    """Give an object whose class ``watching`` swapped its own class back."""
    cls = type(obj)
    if registry.get(cls.__base__) is cls:
        obj.__class__ = cls.__base__


def same_parameters(wrapper: Callable, original: object) -> bool:
    """Whether ``original`` is a plain function taking the parameters ``wrapper`` takes:
    the same names in the same order, of the same kinds, the same ones with defaults. A
    wrapper put there by someone else does not count, even if it names what it wraps."""
    if not isinstance(original, types.FunctionType) or not isinstance(wrapper, types.FunctionType):
        return False
    return _parameters(wrapper) == _parameters(original)


def _parameters(func: types.FunctionType) -> tuple:
    code = func.__code__
    star = code.co_flags & _STAR_ARGS
    count = code.co_argcount + code.co_kwonlyargcount + bin(star).count("1")
    return (code.co_varnames[:count], code.co_posonlyargcount, code.co_argcount, star,
            len(func.__defaults__ or ()), sorted(func.__kwdefaults__ or ()))


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
