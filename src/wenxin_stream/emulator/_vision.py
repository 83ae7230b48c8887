"""Image questions in the emulator: an answer that says what the images are.

The emulator cannot see, and never fetches a link, but a data URL's header tells its format
and size (``wenxin_stream._images``), so the answer to an image question describes each image
of the last user message — format, pixels, bytes, or the link's host — before the usual
seeded text. A client can check that its image arrived intact; Baidu's limits (10 MB, the pixel
range, vision models only) were already enforced by the shared checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .._images import ImageInfo, ImageProblem, describe_image_url
from .._validation import image_parts
from ._answers import OPENING, default_answer

__all__ = ["answer_about_images", "describe"]


def describe(info: ImageInfo, url: str) -> str:
    """One image, in words."""
    if info.kind == "link":
        host = urlsplit(url).hostname or "?"
        return f"一张链接图片（{host}，模拟器不会下载它）"
    fmt = (info.format or "未知格式").upper()
    size = f"{info.width}×{info.height} 像素，" if info.width and info.height else ""
    kilobytes = max(1, round((info.bytes or 0) / 1024))
    return f"一张 {fmt} 图片（{size}约 {kilobytes} KB）"


def answer_about_images(messages: Sequence[Any], question: str, seed: int) -> str | None:
    """The answer to a last user message with images, or None when it has none."""
    last = messages[-1:] if messages else []
    found: list[str] = []
    for _, _, image in image_parts(last):
        url = image.get("url") if isinstance(image, Mapping) else None
        try:
            info = describe_image_url(url)
        except ImageProblem:  # already refused by the shared checks; be safe anyway
            continue
        found.append(describe(info, str(url)))
    if not found:
        return None
    seen = "".join(f"图片 {i}：{text}。" for i, text in enumerate(found, 1))
    body = default_answer(question, seed).removeprefix(OPENING)
    return f"{OPENING}我收到了 {len(found)} 张图片。{seen}{body}"
