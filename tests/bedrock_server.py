"""A minimal stand-in for Bedrock Runtime on 127.0.0.1, for tokmagic's tests: it answers
each POST path with replies scripted by the test, and can encode AWS's binary event
stream framing (which the corpus replay server, a text-stream server, cannot serve).

Bodies go out with chunked transfer encoding, as Bedrock sends streams, optionally cut
into small pieces at pseudo-random byte offsets: botocore's reader hands each HTTP chunk
on as it comes, so frames then reach tokmagic split anywhere."""
from __future__ import annotations

import base64
import json
import random
import struct
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

EVENTSTREAM = "application/vnd.amazon.eventstream"


def string_headers(headers: dict[str, str]) -> bytes:
    """Headers encoded as the framing has them: name length, name, type 7, value length, value."""
    return b"".join(bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value))
                    + value.encode() for name, value in headers.items())


def message(encoded_headers: bytes, payload: bytes) -> bytes:
    """One event stream message around already encoded headers, with both checksums."""
    prelude = struct.pack(">II", 12 + len(encoded_headers) + len(payload) + 4, len(encoded_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    return message(string_headers(headers), payload)


def event(event_type: str, body: dict) -> bytes:
    return frame({":event-type": event_type, ":content-type": "application/json",
                  ":message-type": "event"}, json.dumps(body).encode())


def exception(exception_type: str, message: str) -> bytes:
    return frame({":exception-type": exception_type, ":content-type": "application/json",
                  ":message-type": "exception"}, json.dumps({"message": message}).encode())


def chunk(native_event: dict) -> bytes:
    """An InvokeModelWithResponseStream event: the model's own event, base64-encoded."""
    return event("chunk", {"bytes": base64.b64encode(json.dumps(native_event).encode()).decode()})


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(body: dict, status: int = 200, **headers: str) -> Reply:
    return Reply(status, json.dumps(body).encode(), headers=headers)


def stream_reply(*frames: bytes) -> Reply:
    return Reply(body=b"".join(frames), content_type=EVENTSTREAM,
                 headers={"x-amzn-bedrock-content-type": "application/json"})


class BedrockServer(ThreadingHTTPServer):
    """Serves ``replies[path]`` in turn (the last one again once they run out) and keeps
    each request's path and headers. Paths match percent-decoded: botocore encodes the
    ":" of a model id, the anthropic SDK does not. ``split_seed`` cuts bodies into 1–23
    byte chunks."""

    daemon_threads = True

    def __init__(self, replies: dict[str, list[Reply]], split_seed: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies = {unquote(path): list(items) for path, items in replies.items()}
        self.served: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.random = random.Random(split_seed) if split_seed is not None else None
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_reply(self, path: str) -> Reply | None:
        path = unquote(path)
        with self.lock:
            items = self.replies.get(path)
            if not items:
                return None
            n = self.served.get(path, 0)
            self.served[path] = n + 1
            return items[min(n, len(items) - 1)]

    def pieces(self, body: bytes) -> list[bytes]:
        if self.random is None or not body:
            return [body] if body else []
        with self.lock:
            cuts, at = [], 0
            while at < len(body):
                step = self.random.randint(1, 23)
                cuts.append(body[at:at + step])
                at += step
            return cuts

    def __enter__(self) -> "BedrockServer":
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BedrockServer

    def log_message(self, *args) -> None:
        pass

    def date_time_string(self, timestamp=None) -> str:
        return "Thu, 01 Jan 2026 00:00:00 GMT"  # the same in every reply, for comparisons

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers)))
        reply = self.server.next_reply(self.path) or json_reply(
            {"message": f"no reply scripted for {self.path}"}, 404)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", "00000000-test-0000-0000-000000000000")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for piece in self.server.pieces(reply.body):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
