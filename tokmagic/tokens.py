"""Local token counting with tiktoken, for calls whose provider reported no usage.

tiktoken downloads its encodings on first use and, without a network, fails or hangs.
tokmagic never lets it try: an encoding is loaded only when its file is already in
tiktoken's cache; otherwise counts fall back to a flagged character heuristic."""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
from typing import Any

from .warn import warn_once

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
#: Encodings whose vocabulary lives in another encoding's file.
_FILE_OF = {"o200k_harmony": "o200k_base", "p50k_edit": "p50k_base"}
#: Model prefixes tiktoken does not map (every model it cannot name uses the default).
DEFAULT_ENCODING = "o200k_base"
HEURISTIC = "heuristic:chars/4"

_encodings: dict[str, Any] = {}
_lock = threading.Lock()


def _cache_dir() -> str | None:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"] or None
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"] or None
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _cached(name: str) -> bool:
    folder = _cache_dir()
    if folder is None:
        return False
    url = _BLOB.format(_FILE_OF.get(name, name))
    return os.path.exists(os.path.join(folder, hashlib.sha1(url.encode()).hexdigest()))


def encoding_name(model: str | None) -> str:
    """The tiktoken encoding of ``model``; models tiktoken does not know (Claude,
    Gemini, open models) get o200k_base, an approximation the record flags anyway."""
    if model:
        try:
            from tiktoken.model import encoding_name_for_model

            return encoding_name_for_model(model.rsplit("/", 1)[-1])
        except (ImportError, KeyError):
            pass
    return DEFAULT_ENCODING


def get_encoding(name: str) -> Any | None:
    """The tiktoken encoding, or None where it cannot be loaded offline (warned once)."""
    with _lock:
        if name in _encodings:
            return _encodings[name]
        enc = None
        if not _cached(name):
            warn_once(f"tiktoken-missing:{name}", f"tokmagic: tiktoken's {name} encoding is not in "
                      "its cache, so token estimates use a rough character count. Set "
                      "TIKTOKEN_CACHE_DIR to a folder holding it, or run tiktoken once online.")
        else:
            try:
                import tiktoken

                enc = tiktoken.get_encoding(name)
            except Exception as exc:  # a broken cache file, a missing package
                warn_once(f"tiktoken-failed:{name}", f"tokmagic: tiktoken could not load {name} "
                          f"({exc!r}); token estimates use a rough character count.")
        _encodings[name] = enc
        return enc


class Counter:
    """Counts text for one model; ``method`` says how, for the record's flag."""

    def __init__(self, model: str | None) -> None:
        self.encoding = encoding_name(model)
        self._enc = get_encoding(self.encoding)
        self.method = f"tiktoken:{self.encoding}" if self._enc is not None else HEURISTIC

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._enc is not None:
            return len(self._enc.encode(text, disallowed_special=()))
        return math.ceil(len(text) / 4)


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in ``text`` for ``model`` with its tiktoken encoding (an estimate for models
    that are not OpenAI's)."""
    return Counter(model).count(text)
