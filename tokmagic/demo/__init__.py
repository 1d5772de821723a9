"""A local endpoint that answers OpenAI and Anthropic requests with tokmagic's demo
responses, so someone without an API key can run the quickstart and watch every call
get counted. The replies are written for the demo, not real model output::

    base = tokmagic.demo.start()
    client = openai.OpenAI(base_url=base + "/v1", api_key="demo")
"""
from __future__ import annotations

import json
import threading
from functools import cache
from importlib import resources
from typing import Any

from .server import DemoReplies, DemoServer

__all__ = ["start", "stop", "article"]

_lock = threading.Lock()
_server: DemoServer | None = None


@cache
def _responses() -> dict[str, Any]:
    return json.loads(resources.files(__name__).joinpath("responses.json").read_text("utf-8"))


def start(event_delay_ms: float = 0) -> str:
    """Start the endpoint on 127.0.0.1 (once per process) and return its base URL.

    ``event_delay_ms`` pauses between the events of a stream, so it visibly streams, and
    delays a whole reply about as long as it would have streamed; a later call only
    changes that pause.
    """
    global _server
    with _lock:
        if _server is None:
            _server = DemoServer(("127.0.0.1", 0), DemoReplies(_responses()))
            threading.Thread(target=_server.serve_forever, name="tokmagic-demo", daemon=True).start()
        _server.event_delay_s = event_delay_ms / 1000
        host, port = _server.server_address[:2]
        return f"http://{host}:{port}"


def stop() -> None:
    """Stop the endpoint; a later start() opens a new one on a new port."""
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.shutdown()
        server.server_close()


def article() -> str:
    """The demo article the quickstart summarises: long enough (about 1,100 tokens) for
    OpenAI's prompt cache, which starts at 1,024 tokens."""
    return _responses()["article"]
