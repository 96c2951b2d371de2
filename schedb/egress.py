"""SSRF guard: jobs name arbitrary URLs, so without it anyone able to create a job could make the cluster
call cloud metadata (169.254.169.254), internal services, or the cluster's own API and Raft ports.

The policy judges resolved IP addresses, never names (a name is only as safe as its addresses). At delivery
`GuardedResolver` filters exactly the addresses aiohttp connects to, so DNS cannot change between check and use.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from schedb.config import EgressSection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Internal ranges that ipaddress's is_private misses: shared CGNAT space and local-use NAT64 (RFC 8215).
_ALSO_PRIVATE = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("64:ff9b:1::/48"))
# The well-known NAT64 prefix embeds an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RESOLVE_TIMEOUT_S = 2.0
_CLUSTER_NAME_TTL_S = 10.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)


class EgressRefused(Exception):
    """A webhook target the egress policy forbids; the message says which address and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused by the egress policy: {reason}")
        self.reason = reason


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, if any: such a target reaches that IPv4 host."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _always_refused(ip: IPAddress) -> str | None:
    """Categories no setting allows: none of them is a legitimate webhook receiver."""
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified (reaches this machine)"
    if isinstance(ip, ipaddress.IPv4Address) and int(ip) == 0xFFFFFFFF:
        return "broadcast"
    if ip.is_reserved and not ip.is_loopback:  # ::1 sits inside the reserved ::/8
        return "reserved"
    return None


def _split_host_port(address: str) -> tuple[str, int] | None:
    """Parse "host:port" or "[v6]:port"; None for anything else (a bad entry must not break checks)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _url_host_port(url: str) -> tuple[str, int]:
    """Host and port a URL connects to; EgressRefused for a URL without either (nothing to judge)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise EgressRefused(f"{url!r} is not an http(s) URL with a host")
    return host, port


class EgressPolicy:
    """Decides whether a webhook may connect to a resolved (ip, port)."""

    def __init__(self, allow_private: bool, allow_loopback: bool,
                 cluster_addresses: Callable[[], Iterable[str]]) -> None:
        self.allow_private = allow_private
        self.allow_loopback = allow_loopback
        # Re-read on every check: members join and leave.
        self._cluster_addresses = cluster_addresses
        self._name_cache: dict[str, tuple[float, frozenset[IPAddress]]] = {}
        self._local_ips: frozenset[IPAddress] | None = None

    @classmethod
    def from_config(cls, section: EgressSection, cluster_addresses: Callable[[], Iterable[str]]) -> EgressPolicy:
        return cls(section.allow_private, section.allow_loopback, cluster_addresses)

    def reason(self, ip: str, port: int) -> str | None:
        """Why the webhook may not connect to (ip, port), or None if it may."""
        addr = _parse_ip(ip)
        if addr is None:
            return f"{ip} is not an IP address"
        inner = _embedded_ipv4(addr)
        label = f"{ip} (embedding {inner})" if inner is not None else ip
        addr = inner or addr
        why = _always_refused(addr) or self._cluster_reason(addr, port) or self._range_reason(addr)
        return f"{label} is {why}" if why else None

    def _range_reason(self, ip: IPAddress) -> str | None:
        """Loopback and internal ranges: refused unless this deployment says its receivers live there."""
        if ip.is_loopback:
            return None if self.allow_loopback else "loopback"
        site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
        if ip.is_private or site_local or any(ip in net for net in _ALSO_PRIVATE):
            return None if self.allow_private else "private"
        return None

    def _cluster_reason(self, ip: IPAddress, port: int) -> str | None:
        """A webhook must not drive the cluster's own HTTP API or Raft port, whatever else is allowed."""
        members = [hp for hp in map(_split_host_port, self._cluster_addresses()) if hp is not None]
        if not any(p == port for _, p in members):
            return None
        if any(p == port and ip in self._resolve_member(h) for h, p in members):
            return f"a cluster address (port {port})"
        if ip.is_loopback or ip in self._this_machine():
            # Another local address (127.0.0.2, the host's own IP) reaches the same listening node.
            return f"this machine, and port {port} is a cluster port"
        return None

    def _resolve_member(self, host: str) -> frozenset[IPAddress]:
        """A member's IPs: literals as is, names resolved synchronously and cached briefly."""
        literal = _parse_ip(host)
        if literal is not None:
            return frozenset({_embedded_ipv4(literal) or literal})
        cached = self._name_cache.get(host)
        if cached is None or cached[0] <= time.monotonic():
            cached = self._name_cache[host] = (time.monotonic() + _CLUSTER_NAME_TTL_S, _getaddrinfo_ips(host))
        return cached[1]

    def _this_machine(self) -> frozenset[IPAddress]:
        """This host's addresses, looked up once: cheap, and enough to catch the usual ways around loopback."""
        if self._local_ips is None:
            self._local_ips = _getaddrinfo_ips(socket.gethostname())
        return self._local_ips

    def check_literal(self, url: str) -> None:
        """Judge a URL whose host is an IP literal; aiohttp skips the resolver (and so the guard) for those."""
        host, port = _url_host_port(url)
        if _parse_ip(host) is not None:
            why = self.reason(host, port)
            if why:
                raise EgressRefused(why)
        elif _NUMERIC_HOST.fullmatch(host):
            # 2852039166 or 0251.0376.0251.0376 is 169.254.169.254 to some resolvers and clients.
            raise EgressRefused(f"{host} is an IPv4 address in a non-canonical form")

    async def check_url(self, url: str) -> None:
        """Judge every address the URL's host resolves to now; a name that does not resolve passes
        (it may resolve later, and delivery checks again through GuardedResolver)."""
        self.check_literal(url)
        host, port = _url_host_port(url)
        if _parse_ip(host) is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT_S)
        except UnicodeError as exc:  # no IDNA form ("a..b", a label of 64 characters): it can never resolve
            raise EgressRefused(f"{host!r} is not a valid host name") from exc
        except (OSError, TimeoutError):
            return
        for info in infos:
            why = self.reason(str(info[4][0]), port)
            if why:
                raise EgressRefused(f"{host} resolves to {why}")


def _getaddrinfo_ips(host: str) -> frozenset[IPAddress]:
    """All IPs a name resolves to (blocking); empty if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return frozenset()
    ips = (_parse_ip(str(info[4][0])) for info in infos)
    return frozenset((_embedded_ipv4(ip) or ip) for ip in ips if ip is not None)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops refused addresses, so delivery connects only to addresses the
    policy allows. If none are left it raises OSError, which aiohttp reports as a connection error
    whose text carries the refusal ("refused by the egress policy: ...")."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._inner is None:
            # Made here, not in __init__: the default resolver wants a running event loop.
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        verdicts = [(r, self._policy.reason(r["host"], r["port"] or port)) for r in results]
        kept = [r for r, why in verdicts if why is None]
        if verdicts and not kept:
            refusals = "; ".join(why for _, why in verdicts if why)
            raise OSError(errno.EACCES, str(EgressRefused(f"{host} resolves to {refusals}")))
        return kept

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()

