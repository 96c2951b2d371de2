from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from schedb.config import EgressSection
from schedb.egress import EgressPolicy, EgressRefused, GuardedResolver

CLUSTER = ["127.0.0.1:9001", "127.0.0.1:9101"]


def policy(allow_private: bool = False, allow_loopback: bool = False,
           cluster: Iterable[str] = CLUSTER) -> EgressPolicy:
    members = list(cluster)
    return EgressPolicy(allow_private, allow_loopback, lambda: members)


@pytest.mark.parametrize(("ip", "why"), [
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("2002:a9fe:a9fe::1", "link-local"),
    ("::127.0.0.1", "reserved"),
])
def test_always_refused_whatever_is_allowed(ip: str, why: str) -> None:
    reason = policy(allow_private=True, allow_loopback=True).reason(ip, 80)
    assert reason is not None
    assert why in reason
    assert reason.startswith(ip)


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_loopback_only_when_allowed(ip: str) -> None:
    assert "loopback" in (policy().reason(ip, 8080) or "")
    assert "loopback" in (policy(allow_private=True).reason(ip, 8080) or "")
    assert policy(allow_loopback=True).reason(ip, 8080) is None


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.168.1.1", "172.16.0.1", "fd00::1", "100.64.0.1", "fec0::1"])
def test_private_only_when_allowed(ip: str) -> None:
    assert "private" in (policy().reason(ip, 80) or "")
    assert "private" in (policy(allow_loopback=True).reason(ip, 80) or "")
    assert policy(allow_private=True).reason(ip, 80) is None


@pytest.mark.parametrize("ip", ["8.8.8.8", "2001:4860:4860::8888"])
def test_public_addresses_are_allowed(ip: str) -> None:
    assert policy().reason(ip, 443) is None


def test_the_message_names_the_address_and_the_reason() -> None:
    assert str(EgressRefused("169.254.169.254 is link-local (cloud metadata)")) == (
        "refused by the egress policy: 169.254.169.254 is link-local (cloud metadata)")


def test_cluster_ports_are_refused_even_with_loopback_allowed() -> None:
    p = policy(allow_private=True, allow_loopback=True)
    assert "cluster" in (p.reason("127.0.0.1", 9001) or "")
    assert "cluster" in (p.reason("127.0.0.1", 9101) or "")
    assert "cluster" in (p.reason("127.0.0.2", 9001) or "")  # same node via another loopback address
    assert "cluster" in (p.reason("::1", 9001) or "")
    assert p.reason("127.0.0.1", 9999) is None


def test_cluster_addresses_are_read_on_every_check() -> None:
    members: list[str] = []
    p = EgressPolicy(True, True, lambda: members)
    assert p.reason("10.0.0.5", 9001) is None
    members.append("10.0.0.5:9001")  # a member on another machine joins
    assert "cluster" in (p.reason("10.0.0.5", 9001) or "")
    assert p.reason("10.0.0.6", 9001) is None


def test_cluster_members_given_by_name_are_resolved() -> None:
    p = policy(allow_loopback=True, allow_private=True, cluster=["localhost:9001", "[::1]:9002", "garbage"])
    assert "cluster" in (p.reason("127.0.0.1", 9001) or "")
    assert "cluster" in (p.reason("::1", 9002) or "")
    assert p.reason("127.0.0.1", 9003) is None


def test_from_config() -> None:
    p = EgressPolicy.from_config(EgressSection(allow_private=True), lambda: [])
    assert p.reason("10.1.2.3", 80) is None
    assert p.reason("127.0.0.1", 80) is not None


def test_check_literal_judges_ip_hosts_and_ignores_names() -> None:
    p = policy()
    with pytest.raises(EgressRefused, match=r"169\.254\.169\.254 is link-local"):
        p.check_literal("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(EgressRefused, match="private"):
        p.check_literal("https://[fd00::1]:8443/x")
    with pytest.raises(EgressRefused, match="cluster"):
        policy(allow_loopback=True).check_literal("http://127.0.0.1:9001/jobs")
    p.check_literal("http://8.8.8.8/x")
    p.check_literal("http://localhost/x")  # names are the resolver's job


async def test_check_url_resolves_names() -> None:
    with pytest.raises(EgressRefused, match=r"localhost resolves to .*cluster"):
        await policy(allow_loopback=True).check_url("http://localhost:9001/x")
    with pytest.raises(EgressRefused, match="loopback"):
        await policy().check_url("http://localhost/x")
    await policy(allow_loopback=True).check_url("http://localhost:9999/x")
    await policy().check_url("https://8.8.8.8/x")
    with pytest.raises(EgressRefused, match="link-local"):
        await policy().check_url("http://169.254.169.254/")


async def test_check_url_lets_unresolvable_names_pass() -> None:
    await policy().check_url("http://no-such-host.invalid/x")


@pytest.fixture
async def server_port() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def get_through_guard(p: EgressPolicy, port: int) -> str:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(p), family=socket.AF_INET)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(f"http://localhost:{port}/") as response:
        return await response.text()


async def test_guarded_resolver_allows_loopback_when_allowed(server_port: int) -> None:
    assert await get_through_guard(policy(allow_loopback=True), server_port) == "hi"


async def test_guarded_resolver_refuses_at_connection_time(server_port: int) -> None:
    refused = r"refused by the egress policy: localhost resolves to 127\.0\.0\.1 is loopback"
    with pytest.raises(aiohttp.ClientConnectorError, match=refused):
        await get_through_guard(policy(), server_port)
    cluster = [f"127.0.0.1:{server_port}"]
    with pytest.raises(aiohttp.ClientConnectorError, match=r"egress.*cluster"):
        await get_through_guard(policy(allow_loopback=True, cluster=cluster), server_port)


class _RebindingDns(AbstractResolver):
    """A DNS that answers a name with the given addresses (a name that passed the check at
    create time and points at the metadata service by delivery time)."""

    def __init__(self, *ips: str) -> None:
        self._ips = ips

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=ip, port=port, family=family, proto=0, flags=0) for ip in self._ips]

    async def close(self) -> None:
        return None


async def test_a_name_that_resolves_to_the_metadata_service_is_refused_at_connection(server_port: int) -> None:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy(allow_loopback=True),
                                                              _RebindingDns("169.254.169.254")))
    refused = r"metadata\.example resolves to 169\.254\.169\.254 is link"
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError, match=refused):
            await session.get(f"http://metadata.example:{server_port}/")
    mixed = GuardedResolver(policy(allow_loopback=True), _RebindingDns("169.254.169.254", "127.0.0.1"))
    assert [r["host"] for r in await mixed.resolve("mixed.example", server_port)] == ["127.0.0.1"]


@pytest.mark.parametrize("url", ["http://2852039166/", "http://0251.0376.0251.0376/", "http://169.254.43518/",
                                 "http://0x7f.1:9/", "http://2130706433/x"])
async def test_ipv4_in_non_canonical_forms_is_refused(url: str) -> None:
    """Not IP literals to aiohttp or ipaddress, but getaddrinfo reads them as addresses: refused
    whatever they stand for, since resolvers and clients disagree on them."""
    with pytest.raises(EgressRefused, match="non-canonical"):
        await policy(allow_loopback=True, allow_private=True).check_url(url)
