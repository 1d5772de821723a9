"""The cost of a call in USD, through genai-prices, with the user's own prices on top.

An unknown price is NaN plus one warning naming the model, never 0."""
from __future__ import annotations

import decimal
import math
import numbers
import re
import threading
from dataclasses import dataclass

from .providers import is_free
from .records import Usage
from .warn import warn_once

#: tokmagic's provider names that genai-prices spells differently. "manual" (a call
#: recorded with LLMInteractionMonitor, no provider given) is None: genai-prices then
#: guesses the provider from the model name ("gpt-", "claude", "gemini", ...).
_GENAI_PROVIDER_IDS: dict[str, str | None] = {"google-vertex": "google", "bedrock": "aws", "manual": None}


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
#: A model name that pins a snapshot ("gpt-4o-2024-08-06", "gpt-35-turbo-0613",
#: "gpt-4-1106-preview"), unlike a family name ("gpt-4") that several snapshots answer to.
_DATED = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})(?:-|$)")
_overrides: dict[str, Price] = {}
#: Azure deployment name -> the model to price its calls as (see set_deployment).
_deployments: dict[str, str] = {}
_lock = threading.Lock()
#: Bumped by every change of the user's prices, so the monitor reprices its records.
generation = 1


def _changed() -> None:
    global generation
    generation += 1


def _check_name(func: str, arg: str, value: object, what: str) -> None:
    """Reject a name that is not a non-empty string, saying what to pass instead."""
    if isinstance(value, str) and value.strip():
        return
    message = f"tokmagic.{func}: {arg} must be {what} (a non-empty string), got {value!r}"
    raise (ValueError if isinstance(value, str) else TypeError)(message)


def _rate(arg: str, value: object, optional: bool = False) -> float | None:
    """``value`` as a float price, or the error saying why it is none: found here, not when
    a record is priced inside the user's cell. Any real number (int, float, Fraction,
    numpy) or Decimal is a price; a bool is not."""
    if optional and value is None:
        return None
    message = (f"tokmagic.set_price: {arg} must be {'None or ' if optional else ''}a price in USD per "
               f"million tokens (a number >= 0), got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        raise TypeError(message)
    try:
        rate = float(value) + 0.0  # + 0.0: Decimal("-0") would price calls at -$0
    except (ValueError, OverflowError):  # a signalling NaN; a Fraction beyond float's range
        raise ValueError(message) from None
    if not 0 <= rate < math.inf:  # NaN fails every comparison
        raise ValueError(message)
    return rate


def set_price(model: str, input: float, output: float, cached_input: float | None = None,
              cache_write: float | None = None) -> None:
    """Price ``model`` yourself (USD per million tokens): for models genai-prices does not
    know, negotiated rates or local servers (``set_price("llama3", 0, 0)``). A name
    without a date covers its dated snapshots; a snapshot's own price wins."""
    _check_name("set_price", "model", model, "the model's name, e.g. 'gpt-4o'")
    price = Price(_rate("input", input), _rate("output", output),
                  _rate("cached_input", cached_input, optional=True),
                  _rate("cache_write", cache_write, optional=True))
    with _lock:
        _overrides[model.lower()] = price
        _changed()


def set_deployment(name: str, model: str) -> None:
    """Price the calls to the Azure OpenAI deployment ``name`` as ``model``, e.g.
    ``set_deployment("gpt4-turbo-eval", "gpt-4-turbo-2024-04-09")``. Azure's responses may
    name only the model family ("gpt-4"), whose list price can be far from the snapshot
    the deployment runs; the deployment's own model is known only to its owner."""
    _check_name("set_deployment", "name", name, "the Azure deployment's name")
    _check_name("set_deployment", "model", model, "the model it runs, e.g. 'gpt-4-turbo-2024-04-09'")
    with _lock:
        _deployments[name] = model
        _changed()


def clear_prices() -> None:
    """Forget the prices given with :func:`set_price` and the deployments named with
    :func:`set_deployment`."""
    with _lock:
        _overrides.clear()
        _deployments.clear()
        _changed()


def _deployed_model(deployment: str, reported: str | None) -> str | None:
    """The model to price a call to ``deployment`` as: the user's mapping, else the model
    the response named, with one warning when that name does not pin a snapshot."""
    mapped = _deployments.get(deployment)
    if mapped:
        return mapped
    if reported and reported != deployment and not _DATED.search(reported):
        warn_once(f"deployment:{deployment}:{reported}", f"tokmagic: Azure deployment {deployment!r} "
                  f"names its model only as {reported!r}, so its cost at {reported!r} prices may be "
                  f"wrong; name the model version it runs (shown in the Azure portal) with "
                  f"tokmagic.set_deployment({deployment!r}, '<model>').")
    return reported


def cost_usd(provider: str, model: str | None, usage: Usage, deployment: str | None = None) -> float:
    """The cost of ``usage`` on ``model`` (or on the model ``deployment`` is mapped to);
    NaN (with one warning) when no price is known."""
    if deployment:
        model = _deployed_model(deployment, model)
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
        unmapped = deployment and deployment not in _deployments
        fix = (f"tokmagic.set_deployment({deployment!r}, '<model>')" if unmapped
               else f"tokmagic.set_price({model!r}, input=..., output=...) (USD per million tokens)")
        warn_once(f"price:{provider}:{name}", f"tokmagic: no price is known for model {model!r} "
                  f"({provider}); its cost shows as NaN. Set one with {fix}.")
        return math.nan
    except ValueError as exc:
        warn_once(f"price-error:{provider}:{name}", f"tokmagic: could not price a {model!r} call "
                  f"({exc}); its cost shows as NaN.")
        return math.nan
    return float(calc.total_price)
