"""LLMInteractionMonitor: record by hand the calls tokmagic cannot see (a library it does
not capture, a remote worker), counted with the model's tokenizer. Its records join the
session like captured ones, flagged as local counts."""
from __future__ import annotations

import threading
import time

from .monitor import Monitor, session
from .records import CallRecord, Usage
from .tokens import Counter


class LLMInteractionMonitor:
    """Counts prompt and response tokens of interactions you record yourself.

    ``provider`` ("openai", "anthropic", ...: the names genai-prices uses) says whose
    prices apply; without one, the provider is guessed from the model name ("gpt-",
    "claude", "gemini", ...) and the record's provider is "manual".

    >>> m = LLMInteractionMonitor(model="gpt-4o-mini", provider="openai")
    >>> record = m.record_interaction("Hello there", "Hi! How can I help?")
    >>> m.get_total_tokens()
    (2, 7)
    """

    def __init__(self, model: str | None = None, monitor: Monitor | None = None,
                 provider: str | None = None) -> None:
        self.model = model
        self.monitor = monitor or session
        self.provider = provider
        self.interactions: list[CallRecord] = []
        self._lock = threading.Lock()

    def record_interaction(self, prompt: str | None, response: str | None, model: str | None = None,
                           provider: str | None = None) -> CallRecord:
        """Count ``prompt`` as input and ``response`` as output for ``model`` and ``provider``
        (default: the monitor's); models without a tiktoken encoding are counted with
        o200k_base. ``None`` counts as empty text."""
        prompt, response = _text("prompt", prompt), _text("response", response)
        model = model or self.model
        counter = Counter(model)
        scope = self.monitor.scope
        record = CallRecord(time=time.time(), provider=provider or self.provider or "manual",
                            api="manual", model=model, stream=False, status="ok", http_status=None,
                            source="manual", cell=scope.cell, cell_id=scope.cell_id, tag=scope.tag,
                            scope=scope,
                            usage=Usage(input_tokens=counter.count(prompt),
                                        output_tokens=counter.count(response)),
                            estimated=True, estimate_method=counter.method)
        with self._lock:
            self.interactions.append(record)
        self.monitor.add(record)
        return record

    def get_total_tokens(self) -> tuple[int, int]:
        """(input tokens, output tokens) over the interactions recorded here."""
        with self._lock:
            return (sum(r.usage.input_tokens for r in self.interactions),
                    sum(r.usage.output_tokens for r in self.interactions))


def _text(arg: str, value: object) -> str:
    """``value`` as the text to count; anything but a str (or None) is refused here, where
    the caller can see what they passed, rather than as tiktoken's TypeError."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise TypeError(f"record_interaction: {arg} must be the {arg}'s text (a str), got "
                    f"{type(value).__name__}; pass the text itself (decode bytes, join a list "
                    "of messages' contents).")
