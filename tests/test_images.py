"""Image URLs: what a data URL's header says, and Baidu's limits (10 MB, 5–5999 px per side)."""

from __future__ import annotations

import base64
import struct

import pytest

from wenxin_stream._images import (
    MAX_IMAGE_BYTES,
    ImageInfo,
    ImageProblem,
    describe_image_url,
    image_size,
)


def png(width: int, height: int, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + b"\0" * 4 + extra


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\0" * 8


def jpeg(width: int, height: int, app_bytes: int = 0, fill: bool = False) -> bytes:
    data = b"\xff\xd8"
    if app_bytes:  # an EXIF-like segment before the frame header
        data += b"\xff\xe1" + struct.pack(">H", app_bytes + 2) + b"e" * app_bytes
    if fill:
        data += b"\xff\xff\xff"  # fill bytes before a marker
    data += b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\0" * 9
    return data + b"\xff\xd9"


def data_url(data: bytes, kind: str = "png", *, padding: bool = True) -> str:
    text = base64.b64encode(data).decode()
    return f"data:image/{kind};base64," + (text if padding else text.rstrip("="))


@pytest.mark.parametrize(
    ("data", "kind", "size"),
    [
        (png(640, 480), "png", (640, 480)),
        (gif(10, 20), "gif", (10, 20)),
        (jpeg(800, 600), "jpeg", (800, 600)),
        (jpeg(800, 600, fill=True), "jpeg", (800, 600)),
        (jpeg(1024, 768, app_bytes=60_000), "jpeg", (1024, 768)),  # found past the first prefix
        (png(5, 5999), "png", (5, 5999)),
    ],
)
def test_the_pixel_size_comes_from_the_header(
    data: bytes, kind: str, size: tuple[int, int]
) -> None:
    info = describe_image_url(data_url(data))
    assert info == ImageInfo("data", kind, len(data), *size)


def test_a_link_is_not_fetched() -> None:
    assert describe_image_url("https://example.com/a.png") == ImageInfo("link")
    assert describe_image_url("HTTP://example.com/a.png").kind == "link"


def test_other_formats_have_their_size_checked_only() -> None:
    webp = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\0" * 30
    assert describe_image_url(data_url(webp, "webp")) == ImageInfo("data", "webp", len(webp))


def test_missing_padding_is_tolerated() -> None:
    data = png(33, 44, b"x")  # 34 bytes: base64 ends with padding
    assert describe_image_url(data_url(data, padding=False)).width == 33


def test_a_truncated_header_gives_no_size() -> None:
    assert image_size(b"\x89PNG\r\n") == ("unknown", True)
    assert describe_image_url(data_url(b"\xff\xd8\xff\xe0")) == ImageInfo("data", "jpeg", 4)
    assert image_size(b"\xff\xd8\xff\xd9") == ("jpeg", None)  # no frame header at all
    assert image_size(b"\xff\xd8\x00") == ("jpeg", True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (data_url(png(6000, 10)), "not within the allowed range"),
        (data_url(png(100, 4)), "not within the allowed range"),
        (data_url(jpeg(9000, 100)), "9000×100"),
        ("ftp://example.com/a.png", r"http\(s\) link or a data URL"),
        ("data:text/plain;base64,aGk=", r"http\(s\) link or a data URL"),
        ("data:image/png,raw", r"http\(s\) link or a data URL"),
        ("data:image/png;base64,", "no image data"),
        ("data:image/png;base64,!!!!", "base64 data is invalid"),
        ("", "non-empty string"),
        (None, "non-empty string"),
    ],
)
def test_what_baidu_refuses(url: object, message: str) -> None:
    with pytest.raises(ImageProblem, match=message):
        describe_image_url(url)


def test_over_ten_megabytes_is_refused_without_decoding() -> None:
    payload = "A" * ((MAX_IMAGE_BYTES // 3 + 1) * 4)  # one group over 10 MB
    with pytest.raises(ImageProblem, match="larger than 10 MB"):
        describe_image_url("data:image/png;base64," + payload)
    exactly = "A" * (MAX_IMAGE_BYTES // 3 * 4)
    assert describe_image_url("data:image/png;base64," + exactly).bytes == MAX_IMAGE_BYTES - 1
