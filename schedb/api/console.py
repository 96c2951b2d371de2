"""The web console: static files from schedb/ui, served by every node at /ui/.

The files are plain HTML, CSS and JavaScript modules: nothing is built and
nothing is fetched from elsewhere. They are read once, when the app is made,
into memory (about 60 KB), so a request never touches the disk. The page itself
holds no data and needs no key; everything it shows comes from the API, with
the key the operator typed in (kept in the browser tab's sessionStorage only).
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
FILES_MAX = 64
# The console calls other nodes' APIs when its own node dies (connect-src); nothing else
# leaves the page: no inline script, no frames, no third-party anything.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    # an upgraded node must not leave an old console in the browser's cache
                    "Cache-Control": "no-cache"}
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
                 ".png": "image/png"}
UI_FILES = web.AppKey("ui_files", dict)


def load_files(root: Path = UI_DIR) -> dict[str, tuple[bytes, str, str]]:
    """name relative to ui/ → (content, content type, etag)."""
    files: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        content = path.read_bytes()
        kind = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files[path.relative_to(root).as_posix()] = (content, kind, f'"{hashlib.sha256(content).hexdigest()[:16]}"')
    if not 0 < len(files) <= FILES_MAX or "index.html" not in files:
        raise RuntimeError(f"the console's files under {root} are missing or too many ({len(files)})")
    return files


async def to_console(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def serve_file(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    found = request.app[UI_FILES].get(name)
    if found is None:
        raise web.HTTPNotFound(text="no such file in the console\n")
    content, kind, tag = found
    headers = {**SECURITY_HEADERS, "ETag": tag}
    if request.headers.get("If-None-Match") == tag:
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if kind.startswith("text/") or kind == "image/svg+xml" else None
    return web.Response(body=content, content_type=kind, charset=charset, headers=headers)


def install(app: web.Application) -> dict[tuple[str, str], str]:
    """Adds the console's routes; returns them for the auth middleware (all public)."""
    app[UI_FILES] = load_files()
    routes = [app.router.add_get(path, handler) for path, handler in
              (("/", to_console), ("/ui", to_console), ("/ui/", serve_file), ("/ui/{name:.+}", serve_file))]
    # keyed as the auth middleware looks them up: by the resource's canonical path ("/ui/{name}")
    return {(method, route.resource.canonical): "public" for route in routes if route.resource is not None
            for method in ("GET", "HEAD")}
