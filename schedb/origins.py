"""Origins as browsers send them (`Origin: https://host:8001`) and members' API addresses, as
(host, port): what the CORS middleware compares, and what the config checks `http.cors_origins` with."""

from __future__ import annotations

from urllib.parse import urlsplit

ORIGIN_LEN_MAX = 300
DEFAULT_PORTS = {"http": 80, "https": 443}
Address = tuple[str, int]


def parse_origin(origin: str) -> Address | None:
    """(host, port) of an Origin header; None for "null", a path, user info or anything odd."""
    if len(origin) > ORIGIN_LEN_MAX or not origin.isascii():
        return None
    try:
        parts = urlsplit(origin)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port out of range or not a number
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None or parts.username is not None \
            or parts.password is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname.lower(), port


def parse_member(http_addr: str) -> Address | None:
    """(host, port) of a member's host:port (IPv6 in brackets or not, as the config's)."""
    host, _, port = http_addr.rpartition(":")
    if not (port.isascii() and port.isdigit()) or len(port) > 5:
        return None
    return host.strip("[]").lower(), int(port)
