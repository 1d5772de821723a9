"""Image input tokens by the providers' published rules, for estimates: an image is
never tokenised as text. An image tokmagic cannot size (a remote URL) is not estimable."""
from __future__ import annotations

import base64
import binascii
import math
import struct

#: OpenAI tile models: (base tokens, tokens per 512 px tile), longest prefix first.
_TILES = (("gpt-4o-mini", 2833, 5667), ("gpt-5", 70, 140), ("o1", 75, 150), ("o3", 75, 150),
          ("computer-use", 65, 129), ("gpt-4", 85, 170), ("", 85, 170))
#: OpenAI patch models: token multiplier per 32 px patch.
_PATCHES = (("gpt-4.1-mini", 1.62), ("gpt-5-mini", 1.62), ("gpt-4.1-nano", 2.46),
            ("gpt-5-nano", 2.46), ("o4-mini", 1.72))


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + length
    return None


def data_url_size(url: str | None) -> tuple[int, int] | None:
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        return None
    head = url.split(",", 1)[1][:4096]  # the header is all we need
    try:
        return image_size(base64.b64decode(head[: len(head) // 4 * 4]))
    except (binascii.Error, ValueError):
        return None


def _patches(w: int, h: int) -> int:
    """32 px patches covering the image; past 1536, the image is shrunk to fit in 1536,
    then a little more, so that one side is a whole number of patches (OpenAI's worked
    example: 1800 x 2400 becomes 1056 x 1408, 33 x 44 = 1452 patches)."""
    patches = math.ceil(w / 32) * math.ceil(h / 32)
    if patches <= 1536:
        return patches
    shrink = math.sqrt(32 * 32 * 1536 / (w * h))
    across, down = w * shrink / 32, h * shrink / 32
    shrink *= min(math.floor(across) / across, math.floor(down) / down)
    # the side that was made whole must not round up for a float's last bit
    return min(1536, math.ceil(w * shrink / 32 - 1e-9) * math.ceil(h * shrink / 32 - 1e-9))


def openai_image_tokens(url: str | None, detail: str | None, model: str | None) -> int | None:
    model = (model or "").lower()
    for prefix, mult in _PATCHES:
        if model.startswith(prefix):
            size = data_url_size(url)
            if size is None:
                return None
            return math.ceil(_patches(*size) * mult)
    base, tile = next((b, t) for p, b, t in _TILES if model.startswith(p))
    if detail == "low":
        return base
    size = data_url_size(url)
    if size is None:
        return None
    w, h = size
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_image_tokens(width: int, height: int) -> int:
    """About width × height / 750, after Anthropic's downscale to a 1568 px long edge."""
    scale = min(1.0, 1568 / max(width, height))
    return min(1600, math.ceil(width * scale * height * scale / 750))
