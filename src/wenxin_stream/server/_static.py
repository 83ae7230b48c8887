"""The chat page: ``GET /`` and ``GET /static/{name}`` from ``server/static/`` (no CDN, no build).

Theory of operation
===================

Whatever files are in the static directory are served, by exact name (one path segment of
letters, digits, ``.``, ``_`` and ``-``, not starting with a dot — so no traversal, no hidden
files), and so are the files of its ``vendor/`` folder (the pinned third-party libraries that
``scripts/vendor-static`` copies from npm) under ``/static/vendor/{name}``. ``/`` is
``index.html``, or a small placeholder page when there is none.

Each file is read once and kept in memory with its strong ``ETag`` (a SHA-256 prefix) until its
size or modification time changes. The names carry no content hash (there is no build step),
so caching is by revalidation: ``Cache-Control: no-cache`` plus ``ETag`` / ``Last-Modified``,
and ``If-None-Match`` answers ``304`` without a body — a browser never runs a stale script
after an upgrade, and an unchanged file costs one round trip and no bytes. Content types are
explicit (``text/javascript`` for modules, ``charset=utf-8`` on text) and ``nosniff`` is set;
HTML may not be framed, and carries a strict Content-Security-Policy (:data:`CSP`): scripts,
styles and connections from this origin only, no inline script or style markup, no plugins,
images from this origin or ``data:``/``blob:`` URLs (an attached image is previewed from its
data URL), no ``<base>``, no form posts elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from email.utils import formatdate
from pathlib import Path

from .._asgi import Headers, Receive, Send
from ._http import Context, HTTPError, Routes

__all__ = ["STATIC_DIR", "StaticFiles"]

STATIC_DIR = Path(__file__).with_name("static")
"""Where the page's files live."""

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}

CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    b"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    b"form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
"""The page's Content-Security-Policy (see the module docstring)."""

VENDOR = "vendor"
"""The folder of vendored libraries inside the static directory."""

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

PLACEHOLDER = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wenxin serve</title></head>
<body><h1>wenxin serve</h1>
<p>The chat page is not installed. The API is running: see
<a href="/openapi.json">/openapi.json</a> and <a href="/api/info">/api/info</a>.</p>
</body></html>
"""


class _File:
    __slots__ = ("body", "etag", "modified", "stamp")

    def __init__(self, body: bytes, stamp: tuple[int, int]) -> None:
        self.body = body
        self.stamp = stamp
        self.etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:20].encode()
        self.modified = formatdate(stamp[0] / 1e9, usegmt=True).encode()


class StaticFiles:
    """Serves the files of one directory (see the module docstring)."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.directory = directory
        self._cache: dict[str, _File] = {}

    def routes(self) -> Routes:
        """The page's routes: path template → method → handler."""
        return {
            "/": {"GET": self.index},
            "/static/{name}": {"GET": self.asset},
            "/static/vendor/{name}": {"GET": self.vendor_asset},
        }

    async def index(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /``: the chat page."""
        await self.answer("index.html", ctx, send)

    async def asset(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /static/{name}``: one of the page's files."""
        await self.answer(ctx.params["name"], ctx, send)

    async def vendor_asset(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /static/vendor/{name}``: one of the vendored libraries."""
        await self.answer(ctx.params["name"], ctx, send, folder=VENDOR)

    def load(self, name: str, folder: str = "") -> _File | None:
        """The file ``name`` of the static directory or of its ``folder`` (cached while
        unchanged), or ``None``."""
        if not _NAME.fullmatch(name):
            return None
        key = f"{folder}/{name}" if folder else name
        path = self.directory / key
        try:
            info = path.stat()
            if not path.is_file():
                return None
            stamp = (info.st_mtime_ns, info.st_size)
            cached = self._cache.get(key)
            if cached is not None and cached.stamp == stamp:
                return cached
            loaded = _File(path.read_bytes(), stamp)
        except OSError:
            return None
        self._cache[key] = loaded
        return loaded

    async def answer(self, name: str, ctx: Context, send: Send, folder: str = "") -> None:
        """Send the file ``name`` of the static directory or of its ``folder`` (or 304 / 404)."""
        found = self.load(name, folder)
        if found is None:
            if name == "index.html" and not folder:
                await _send(send, 200, PLACEHOLDER, _headers("index.html", b"no-cache"))
                return
            raise HTTPError(404, "not_found", f"no such file: {name}")
        headers = _headers(name, b"no-cache")
        headers += [(b"etag", found.etag), (b"last-modified", found.modified)]
        match = ctx.request.headers.get("if-none-match", "")
        if found.etag.decode() in [tag.strip() for tag in match.split(",")]:
            await _send(send, 304, b"", headers)
            return
        await _send(send, 200, found.body, headers)


def _headers(name: str, cache: bytes) -> Headers:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    content_type = CONTENT_TYPES.get(suffix, "application/octet-stream")
    headers: Headers = [
        (b"content-type", content_type.encode()),
        (b"cache-control", cache),
        (b"x-content-type-options", b"nosniff"),
    ]
    if suffix == ".html":
        headers += [
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", CSP),
        ]
    return headers


async def _send(send: Send, status: int, body: bytes, headers: Headers) -> None:
    if status != 304:
        headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
