"""How a node reaches another member's HTTP API (membership changes, drains, clock probes)."""

from __future__ import annotations

import ssl

from schedb.config import Config


def peer_url(config: Config, http_addr: str, path: str) -> str:
    """Members share one scheme: this node's own (https when it serves TLS)."""
    scheme = "https" if config.http.tls_cert_file else "http"
    return f"{scheme}://{http_addr}{path}"


def peer_tls(config: Config) -> ssl.SSLContext | bool:
    """How this node verifies another node's API (True: the system's CAs)."""
    ca_file = config.http.tls_ca_file
    return ssl.create_default_context(cafile=ca_file) if ca_file else True
