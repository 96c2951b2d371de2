"""SSRF guard: jobs name arbitrary URLs, so without it anyone able to create a job could make the cluster
call cloud metadata (169.254.169.254), internal services, or the cluster's own API and Raft ports.

The policy judges resolved IP addresses, never names (a name is only as safe as its addresses). At delivery
`GuardedResolver` filters exactly the addresses aiohttp connects to, so DNS cannot change between check and use.

The host judged is the one aiohttp connects to: yarl's normalised `raw_host`, not the text of the URL. yarl
maps fullwidth, mathematical and segmented digits to ASCII ones (UTS 46), so 127.0.0.1 written in fullwidth
digits reaches 127.0.0.1, while getaddrinfo fails on the text as written. A host written in non-ASCII must
also be a proper IDNA name (every non-ASCII label an A-label, "xn--..."), and never digits alone, of any
script: those read as an IP address to people and to some software.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from functools import lru_cache

import idna
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from schedb.clock import monotonic
from schedb.config import EgressSection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Internal ranges that ipaddress's is_private misses: shared CGNAT space and local-use NAT64 (RFC 8215).
_ALSO_PRIVATE = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("64:ff9b:1::/48"))
# The well-known NAT64 prefix embeds an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RESOLVE_TIMEOUT_S = 2.0
_CLUSTER_NAME_TTL_S = 10.0
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)
# What IDNA (UTS 46) reads as a label separator: the full stop and its ideographic and fullwidth forms.
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")


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


@lru_cache(maxsize=1024)  # per webhook call, for each member's address
def _split_host_port(address: str) -> tuple[str, int] | None:
    """Parse "host:port" or "[v6]:port"; None for anything else (a bad entry must not break checks)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


@lru_cache(maxsize=4096)  # per webhook call, for the target and each member
def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@lru_cache(maxsize=4096)  # per webhook call (pure: a refusal raises, and is not cached)
def connect_target(url: str) -> tuple[str, int]:
    """The host and port aiohttp connects to for this URL (yarl's normalised host: an ASCII name, an
    A-label name or an IP address); EgressRefused for a URL without either, or with a host that is
    not a proper IDNA name."""
    try:
        parsed = yarl.URL(url)
        scheme, host, port = parsed.scheme, parsed.raw_host, parsed.port
        written = yarl.URL(url, encoded=True).raw_host  # the host as the URL spells it
    except (ValueError, TypeError):  # yarl refuses what it cannot normalise; so would the client
        scheme, host, port, written = "", None, None, None
    if not host or port is None or scheme not in ("http", "https"):
        raise EgressRefused(f"{url!r} is not an http(s) URL with a host")
    if written and not written.isascii():
        why = _international_reason(written, host)
        if why:
            raise EgressRefused(why)
    return host, port


def _international_reason(written: str, host: str) -> str | None:
    """Why a host written with non-ASCII characters is refused, or None for a proper IDNA name
    that yarl (and so aiohttp) encodes as `host`."""
    labels = _IDNA_DOTS.split(written)
    if all(label.isdecimal() for label in labels if label):  # digits of any script: 127.0.0.1 to someone
        return f"{written!r} is an IP address written with non-ASCII digits (write addresses in ASCII)"
    try:
        encoded = idna.encode(written, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        return f"{written!r} is not a valid internationalised host name (IDNA: {exc})"
    a_labels = encoded.split(".")
    if len(a_labels) != len(labels) or any(not label.isascii() and not a_label.startswith("xn--")
                                           for label, a_label in zip(labels, a_labels, strict=True)):
        return f"{written!r} is not a proper IDNA host name (a non-ASCII label must encode to an xn-- A-label)"
    if encoded.lower() != host.lower():  # yarl fell back to another encoding: judge nothing it does not send
        return f"{written!r} encodes to {encoded}, but the HTTP client would connect to {host}"
    return None


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
        if cached is None or cached[0] <= monotonic():
            cached = self._name_cache[host] = (monotonic() + _CLUSTER_NAME_TTL_S, _getaddrinfo_ips(host))
        return cached[1]

    def _this_machine(self) -> frozenset[IPAddress]:
        """This host's addresses, looked up once: cheap, and enough to catch the usual ways around loopback."""
        if self._local_ips is None:
            self._local_ips = _getaddrinfo_ips(socket.gethostname())
        return self._local_ips

    def check_literal(self, url: str) -> None:
        """Judge the host aiohttp connects to when it is an IP literal (aiohttp skips the resolver, and so
        the guard, for those), and refuse hosts the client would read otherwise than a resolver (connect_target).
        Run at create and again before every delivery."""
        host, port = connect_target(url)
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
        host, port = connect_target(url)
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

