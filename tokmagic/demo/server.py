"""The demo endpoint's HTTP side: answers OpenAI- and Anthropic-style requests with the
demo responses, so the real SDKs (and tokmagic's capture) run end to end without an API
key. Streams go out one SSE event per HTTP chunk, as providers send them."""
from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class DemoReplies:
    """The replies of each kind, handed out in turn so repeated calls differ."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._turns: Counter[str] = Counter()
        self._lock = threading.Lock()

    def next(self, kind: str) -> Any:
        with self._lock:
            pool = self._data[kind]
            reply = pool[self._turns[kind] % len(pool)]
            self._turns[kind] += 1
            return reply


def reply_kind(path: str, request: dict[str, Any]) -> str | None:
    """Which demo reply answers a request: by endpoint and the stream flags the SDK sent."""
    path = path.split("?", 1)[0]
    stream = bool(request.get("stream"))
    if path.endswith("/chat/completions"):
        if not stream:
            return "openai_chat"
        usage = (request.get("stream_options") or {}).get("include_usage")
        return "openai_chat_stream" if usage else "openai_chat_stream_no_usage"
    if path.endswith("/embeddings"):
        return "openai_embeddings"
    if path.endswith("/v1/messages"):
        return "anthropic_messages_stream" if stream else "anthropic_messages"
    return None


def embeddings_body(stored: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """One vector per input, base64-packed when asked (the openai SDK asks by default)."""
    inputs = request.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    vectors = [item["embedding"] for item in stored["data"]]
    packed = request.get("encoding_format") == "base64"
    data = []
    for i in range(count):
        vector = vectors[i % len(vectors)]
        if packed:
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    return {**stored, "data": data}


def sse_event(event: dict[str, Any]) -> bytes:
    """A stored event as providers send it: ``event:`` (Anthropic only), one ``data:``
    line of compact JSON (or OpenAI's ``[DONE]``), then a blank line."""
    data = event["data"]
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    name = f"event: {event['event']}\n" if "event" in event else ""
    return f"{name}data: {text}\n\n".encode()


#: Tokens a streamed demo event carries, about: what paces a whole (unstreamed) reply.
TOKENS_PER_EVENT = 4


class DemoServer(ThreadingHTTPServer):
    """Holds the replies and the pause between stream events; says nothing on stderr."""

    def __init__(self, address: tuple[str, int], replies: DemoReplies) -> None:
        super().__init__(address, DemoHandler)
        self.replies = replies
        self.event_delay_s = 0.0

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up mid-stream is not worth a traceback in the notebook


class DemoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    server: DemoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._json(400, _error("the request body is not a JSON object"))
            return
        kind = reply_kind(self.path, request)
        if kind is None:
            self._json(404, _error(f"the tokmagic demo does not serve {self.path}"))
            return
        reply = self.server.replies.next(kind)
        if kind == "openai_embeddings":
            self._json(200, embeddings_body(reply, request))
        elif isinstance(reply, list):
            self._stream(reply)
        else:
            self._pause_for(reply)
            self._json(200, reply)

    def do_GET(self) -> None:
        self._json(404, _error(f"the tokmagic demo does not serve GET {self.path}"))

    def _pause_for(self, reply: dict[str, Any]) -> None:
        """Wait about as long as the reply would take to stream (at some four tokens an
        event), so a whole reply's latency and tokens/s look like a real model's."""
        usage = reply.get("usage") or {}
        tokens = usage.get("completion_tokens") or usage.get("output_tokens") or 0
        if self.server.event_delay_s and isinstance(tokens, int):
            time.sleep(min(2.0, self.server.event_delay_s * tokens / TOKENS_PER_EVENT))

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if i and self.server.event_delay_s:
                    time.sleep(self.server.event_delay_s)
                payload = sse_event(event)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the caller stopped reading the stream


def _error(message: str) -> dict[str, Any]:
    """An error body both SDKs can read (``error.message``, ``error.type``)."""
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
