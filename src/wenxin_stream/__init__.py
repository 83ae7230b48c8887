"""wenxin-stream: stream answers from Baidu's ERNIE Bot (文心一言), exactly and fast."""

from ._version import __version__

__all__ = ["__version__"]
