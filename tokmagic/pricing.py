"""The cost of a call in USD, through genai-prices, with the user's own prices on top.

An unknown price is NaN plus one warning naming the model, never 0."""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

from .providers import is_free
from .records import Usage
from .warn import warn_once

#: tokmagic's provider names that genai-prices spells differently.
_GENAI_PROVIDER_IDS = {"google-vertex": "google", "bedrock": "aws"}


@dataclass(frozen=True)
class Price:
    """USD per million tokens, as providers publish them."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def cost(self, u: Usage) -> float:
        cached = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        fresh = u.input_tokens - u.cached_input_tokens - u.cache_write_tokens
        return (fresh * self.input + u.cached_input_tokens * cached
                + u.cache_write_tokens * write + u.output_tokens * self.output) / 1e6


#: A dated snapshot suffix: a price set for "gpt-4o-mini" also covers "gpt-4o-mini-2024-07-18".
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_overrides: dict[str, Price] = {}
_lock = threading.Lock()


def set_price(model: str, input: float, output: float, cached_input: float | None = None,
              cache_write: float | None = None) -> None:
    """Price ``model`` yourself (USD per million tokens): for models genai-prices does not
    know, negotiated rates or local servers (``set_price("llama3", 0, 0)``). A name
    without a date covers its dated snapshots; a snapshot's own price wins."""
    with _lock:
        _overrides[model.lower()] = Price(input, output, cached_input, cache_write)


def clear_prices() -> None:
    """Forget the prices given with :func:`set_price`."""
    with _lock:
        _overrides.clear()


def cost_usd(provider: str, model: str | None, usage: Usage) -> float:
    """The cost of ``usage`` on ``model``; NaN (with one warning) when no price is known."""
    if not model:
        warn_once(f"price:{provider}:", f"tokmagic: a {provider} call named no model, so its "
                  "cost is unknown (NaN).")
        return math.nan
    if is_free(provider):
        return 0.0
    name = model.lower().removeprefix("models/")
    override = _overrides.get(name) or _overrides.get(_SNAPSHOT.sub("", name))
    if override is not None:
        return override.cost(usage)
    try:
        import genai_prices
    except ImportError:
        warn_once("price:no-genai-prices", "tokmagic: genai-prices is not installed, so costs are "
                  "unknown (NaN). Install it with `pip install genai-prices`.")
        return math.nan
    try:
        calc = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=usage.input_tokens,
                               cache_read_tokens=usage.cached_input_tokens,
                               cache_write_tokens=usage.cache_write_tokens,
                               output_tokens=usage.output_tokens),
            name, provider_id=_GENAI_PROVIDER_IDS.get(provider, provider))
    except LookupError:
        warn_once(f"price:{provider}:{name}", f"tokmagic: no price is known for model {model!r} "
                  f"({provider}); its cost shows as NaN. Set one with "
                  f"tokmagic.set_price({model!r}, input=..., output=...) (USD per million tokens).")
        return math.nan
    except ValueError as exc:
        warn_once(f"price-error:{provider}:{name}", f"tokmagic: could not price a {model!r} call "
                  f"({exc}); its cost shows as NaN.")
        return math.nan
    return float(calc.total_price)
