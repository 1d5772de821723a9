"""Content decoding for observed streams. tokmagic watches the raw bytes the HTTP library
reads and decodes its own copy, so the library's decoder and the bytes it returns are
never touched."""
from __future__ import annotations

import zlib
from typing import Callable


def _zlib(wbits: int) -> Callable[[bytes], bytes]:
    d = zlib.decompressobj(wbits)
    return d.decompress


def _deflate() -> Callable[[bytes], bytes]:
    # "deflate" is zlib-wrapped by the spec but raw in some servers: decide on first bytes
    state: dict = {}

    def decode(data: bytes) -> bytes:
        if "d" not in state:
            if not data:
                return b""
            state["d"] = zlib.decompressobj(zlib.MAX_WBITS if (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS)
        return state["d"].decompress(data)
    return decode


def _brotli() -> Callable[[bytes], bytes]:
    import brotli  # httpx decodes br only with this (or brotlicffi) installed

    d = brotli.Decompressor()
    return d.process


def _zstd() -> Callable[[bytes], bytes]:
    # the module httpx itself decodes zstd with: the standard library's from 3.14, its
    # backport before; zstandard where only that is installed
    for name in ("compression.zstd", "backports.zstd"):
        try:
            module = __import__(name, fromlist=["ZstdDecompressor"])
        except ImportError:
            continue
        return _zstd_frames(module.ZstdDecompressor)
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress


def _zstd_frames(decompressor: type) -> Callable[[bytes], bytes]:
    """A body may hold several zstd frames; a decompressor object reads one."""
    state = {"d": decompressor()}

    def decode(data: bytes) -> bytes:
        out = []
        while data:
            d = state["d"]
            out.append(d.decompress(data))
            if not d.eof:
                break
            data = d.unused_data
            state["d"] = decompressor()
        return b"".join(out)
    return decode


_DECODERS = {"gzip": lambda: _zlib(zlib.MAX_WBITS | 16), "x-gzip": lambda: _zlib(zlib.MAX_WBITS | 16),
             "deflate": _deflate, "br": _brotli, "zstd": _zstd}


class UnsupportedEncoding(Exception):
    pass


def decoder_for(content_encoding: str | None) -> Callable[[bytes], bytes] | None:
    """A function that decodes successive pieces of a body sent with ``content_encoding``;
    None for an identity body. Raises UnsupportedEncoding when it cannot be decoded."""
    steps = [e.strip().lower() for e in (content_encoding or "").split(",")]
    steps = [e for e in steps if e and e != "identity"]
    if not steps:
        return None
    try:
        chain = [_DECODERS[e]() for e in reversed(steps)]
    except (KeyError, ImportError) as exc:
        raise UnsupportedEncoding(content_encoding) from exc
    if len(chain) == 1:
        return chain[0]

    def decode(data: bytes) -> bytes:
        for step in chain:
            data = step(data)
        return data
    return decode
