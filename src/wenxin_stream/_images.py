"""Image parts of v2 messages: what an ``image_url`` says, checked against Baidu's limits. No I/O.

Theory of operation
===================

A vision model takes ``{"type": "image_url", "image_url": {"url": …}}`` parts, where ``url`` is
an http(s) link or a data URL ``data:image/<format>;base64,<data>`` (``shared/ERNIE-CURRENT.md``
§5). Baidu refuses (400 ``invalid_image_url``) an image over 10 MB, a side of 6000 px or more,
or a shorter side under 5 px. A link cannot be checked without fetching it, which the SDK never
does; a data URL can, cheaply:

* its size follows from the base64 length (no decoding);
* its pixel size is in the first bytes of a PNG (the IHDR chunk), GIF (the logical screen) or
  JPEG (the first SOF marker, after any APP/EXIF segments): only a prefix is decoded, grown
  until the marker is found (a 10 MB image decodes at most once, and usually only its first
  kilobyte). Other formats (WebP, BMP…) are passed with their size checked and their pixels
  unknown.

:func:`describe_image_url` returns an :class:`ImageInfo` (kind, format, bytes, width, height)
or raises :class:`ImageProblem` with Baidu-style text; the SDK turns that into an
``InvalidRequestError`` naming the part, and the emulator into 400 ``invalid_image_url``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageInfo",
    "ImageProblem",
    "describe_image_url",
    "image_size",
]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""The largest image Baidu accepts (10 MB)."""

MAX_SIDE = 6000
"""Each side must be under this many pixels."""

MIN_SIDE = 5
"""The shorter side must be at least this many pixels."""

_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+)((?:;[^,;]*)*?);base64,", re.ASCII)
_FIRST_PREFIX = 1024  # base64 characters decoded first (768 bytes)


class ImageProblem(ValueError):
    """An ``image_url`` Baidu would refuse; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What an image URL says: ``kind`` (``"link"`` or ``"data"``), the image ``format``
    (``"png"``, ``"jpeg"``…; ``None`` for a link), its size in ``bytes`` and its ``width`` and
    ``height`` in pixels (``None`` when unknown)."""

    kind: str
    format: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None


def _png(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _gif(data: bytes) -> tuple[int, int] | None:
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return None


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg(data: bytes) -> tuple[int, int] | bool | None:
    """(width, height); ``True`` when more bytes are needed; ``None`` if not a JPEG or no frame
    header can be found."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while True:
        while data[pos : pos + 2] == b"\xff\xff":
            pos += 1  # fill bytes
        if pos + 2 > len(data):
            return True
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan began without a frame header
            return None
        if marker in _SOF:
            if pos + 9 > len(data):
                return True
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        if pos + 4 > len(data):
            return True
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def image_size(data: bytes) -> tuple[str, tuple[int, int] | bool | None]:
    """The format and pixel size ``data`` (the first bytes of an image) show: (format,
    (width, height)), (format, True) when more bytes are needed, or (format, None) when the
    size cannot be read from a header (unknown formats are ``"unknown"``)."""
    for name, reader in (("png", _png), ("gif", _gif)):
        size = reader(data)
        if size is not None:
            return name, size
    if data[:2] == b"\xff\xd8":
        return "jpeg", _jpeg(data)
    if len(data) < 24 and data[:1] in (b"\x89", b"G"):
        return "unknown", True
    return "unknown", None


def _decoded_prefix(payload: str, chars: int) -> bytes:
    """The bytes the first ``chars`` base64 characters of ``payload`` hold (all of it, with any
    missing padding added, once ``chars`` reaches its length)."""
    if chars >= len(payload):
        text = payload + "=" * (-len(payload) % 4)
    else:
        text = payload[: chars - chars % 4]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageProblem("the data URL's base64 data is invalid") from None


def _check_sides(width: int, height: int) -> None:
    if max(width, height) >= MAX_SIDE or min(width, height) < MIN_SIDE:
        raise ImageProblem(
            f"the image width and height are not within the allowed range ({width}×{height} "
            f"px; each side must be under {MAX_SIDE} px and the shorter at least {MIN_SIDE} px)"
        )


def describe_image_url(url: object) -> ImageInfo:
    """What ``url`` (an ``image_url.url``) is, checked against Baidu's limits.

    Raises:
        ImageProblem: not an http(s) or ``data:image/…;base64,`` URL, invalid base64, an image
            over :data:`MAX_IMAGE_BYTES`, or (PNG, GIF, JPEG) a side outside the pixel range.
    """
    if not isinstance(url, str) or not url:
        raise ImageProblem("image_url.url must be a non-empty string")
    lowered = url[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return ImageInfo("link")
    match = _DATA_URL.match(url)
    if match is None:
        raise ImageProblem(
            "image_url.url must be an http(s) link or a data URL "
            "(data:image/<format>;base64,<data>)"
        )
    payload = url[match.end() :]
    stripped = payload.rstrip("=")
    size = len(stripped) * 3 // 4
    if size > MAX_IMAGE_BYTES:
        raise ImageProblem(f"the image is larger than 10 MB ({size} bytes)")
    if not stripped:
        raise ImageProblem("the data URL holds no image data")
    chars = _FIRST_PREFIX
    while True:
        head = _decoded_prefix(payload, chars)
        kind, pixels = image_size(head)
        if pixels is True and chars < len(payload):
            chars *= 8
            continue
        break
    declared = match.group(1).split("/", 1)[1].lower()
    if kind == "unknown":
        return ImageInfo("data", declared, size)
    if not isinstance(pixels, tuple):
        return ImageInfo("data", kind, size)
    _check_sides(*pixels)
    return ImageInfo("data", kind, size, pixels[0], pixels[1])
