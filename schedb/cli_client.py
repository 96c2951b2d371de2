"""The command line's HTTP client: its options (--url, --api-key, --ca-file, --insecure), one
JSON request with problem+json errors made readable, and tables. Shared by schedb.cli and
schedb.cli_teams."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8001"
TIMEOUT_S = 10.0


class ApiError(Exception):
    pass


def client_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"a node's API (default {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--api-key", default=os.environ.get("SCHEDB_API_KEY") or None, metavar="KEY",
                        help="the API key, when the cluster has auth on (default $SCHEDB_API_KEY)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--ca-file", default=os.environ.get("SCHEDB_CA_FILE") or None, metavar="PATH",
                     help="verify an https:// node against this CA (PEM; default $SCHEDB_CA_FILE, "
                          "else the system's CAs)")
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify the node's certificate (wins over $SCHEDB_CA_FILE)")
    return parser


def client_tls(url: str, ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext | None:
    """The TLS context for an https:// URL; None means urllib's default (system CAs), and
    for http:// URLs the options do not matter."""
    if not url.startswith("https://"):
        return None
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if not ca_file:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # missing, unreadable, or not PEM (ssl.SSLError is an OSError)
        raise ApiError(f"cannot use CA file {ca_file}: {exc}") from exc


def call(args: argparse.Namespace, method: str, path: str, body: Any = None, timeout_s: float = TIMEOUT_S) -> Any:
    """request() with the client options (--url, --api-key, --ca-file, --insecure) of a command."""
    return request(args.url, method, path, body, timeout_s, tls=client_tls(args.url, args.ca_file, args.insecure),
                   api_key=args.api_key)


def request(url: str, method: str, path: str, body: Any = None, timeout_s: float = TIMEOUT_S,
            tls: ssl.SSLContext | None = None, api_key: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=tls) as resp:
            text = resp.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
        except ValueError:
            raise ApiError(f"HTTP {exc.code}") from exc
        fields = "; ".join(f"{e['field']}: {e['message']}" for e in problem.get("errors") or [])
        raise ApiError(f"{problem.get('title')} ({exc.code}): {fields or problem.get('detail')}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):  # reached, but TLS failed: not a "node down" hint
            raise ApiError(f"TLS with {url} failed: {exc.reason} (see --ca-file, --insecure)") from exc
        raise ApiError(f"cannot reach {url}: {exc.reason} (is the node running?)") from exc
    except (OSError, http.client.HTTPException) as exc:
        # A TLS node hangs up on a plain request: say so rather than only "is it running?".
        hint = "is the node running, or does it serve https?" if url.startswith("http://") else "is the node running?"
        raise ApiError(f"cannot reach {url}: {getattr(exc, 'reason', exc)} ({hint})") from exc


def print_table(args: argparse.Namespace, data: Any, rows: list[list[str]], header: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
        return
    table = [header, *rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
