"""Real PNG images of any size, made in memory for the image-token tests: a 1-bit
greyscale stripe pattern, so that even a 2048 x 4096 picture is a few kilobytes."""
from __future__ import annotations

import base64
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` pixels: stripes 8 px wide."""
    row = b"\x00" + bytes([0b11110000]) * ((width + 7) // 8)  # filter byte, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(row * height, 9)) + _chunk(b"IEND", b""))


def png_base64(width: int, height: int) -> str:
    return base64.b64encode(png(width, height)).decode()


def png_data_url(width: int, height: int) -> str:
    return "data:image/png;base64," + png_base64(width, height)
