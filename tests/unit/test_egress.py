from __future__ import annotations

import socket
import sys
import unicodedata
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from schedb import egress
from schedb.commands import RegisterNode
from schedb.config import (
    Config,
    EgressSection,
    ExecutorSection,
    HttpSection,
    LogSection,
    NodeSection,
    RaftSection,
    SchedulerSection,
)
from schedb.egress import EgressPolicy, EgressRefused, GuardedResolver
from schedb.fsm.machine import StateMachine
from schedb.jobspec import validate_job
from schedb.node import Node
from schedb.webhook import deliver, new_session

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


def digit_sets() -> dict[int, str]:
    """Every set of ten decimal digits Unicode has besides ASCII (Arabic-Indic, Devanagari, fullwidth,
    mathematical, segmented U+1FBF0..., some fifty more), as "0123456789" in that set, keyed by the
    code point of its zero: each digit's code point minus its value."""
    found: dict[int, dict[int, str]] = {}
    for code_point in range(sys.maxunicode + 1):
        value = unicodedata.decimal(chr(code_point), None)
        if value is not None:
            found.setdefault(code_point - value, {})[value] = chr(code_point)
    assert all(sorted(digits) == list(range(10)) for digits in found.values())  # blocks of ten, in order
    return {zero: "".join(digits[v] for v in range(10)) for zero, digits in sorted(found.items()) if zero != ord("0")}


def spelled(address: str, digits: str) -> str:
    """An ASCII dotted address written with another set's digits."""
    return address.translate(str.maketrans("0123456789", digits))


def unicode_digit_hosts() -> list[str]:
    """127.0.0.1 and 169.254.169.254 in every non-ASCII digit set."""
    return [spelled(ip, digits) for digits in digit_sets().values() for ip in ("127.0.0.1", "169.254.169.254")]


def test_the_digit_sets_are_all_there() -> None:
    sets = digit_sets()
    assert len(sets) >= 60  # Unicode 14 (Python 3.11) has 64 besides ASCII
    for zero in (0x0660, 0x0966, 0xFF10, 0x1D7CE, 0x1FBF0):  # Arabic-Indic, Devanagari, fullwidth, math, segmented
        assert sets[zero] == "".join(chr(zero + v) for v in range(10))


@pytest.mark.parametrize("allowed", [False, True], ids=["strict", "loopback-and-private-allowed"])
async def test_ips_in_non_ascii_digits_are_refused_at_create(allowed: bool) -> None:
    """What the API checks (check_url, run at create and update): every host is refused, whatever
    the policy allows, since yarl reads some as 127.0.0.1 and getaddrinfo none of them."""
    p = policy(allow_private=allowed, allow_loopback=allowed)
    passed = []
    for host in unicode_digit_hosts():
        try:
            await p.check_url(f"http://{host}:8080/hook")
        except EgressRefused as exc:
            assert host in exc.reason or "127.0.0.1" in exc.reason or "169.254.169.254" in exc.reason
        else:
            passed.append(host)
    assert passed == []


@pytest.fixture
async def counting_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A receiver on 127.0.0.1: its port, and the Host header of every request it got."""
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.host)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], hits
    finally:
        await runner.cleanup()


async def test_ips_in_non_ascii_digits_are_refused_at_delivery(counting_server: tuple[int, list[str]]) -> None:
    """What the executor runs (webhook.deliver with the node's session and policy), for jobs that
    passed an older check: none connects, although loopback is allowed and 127.0.0.1 itself works."""
    port, hits = counting_server
    p = policy(allow_loopback=True, allow_private=True)
    fire = {"fire_id": "j:1", "job_id": "j", "scheduled_ms": 1, "attempt": 1}
    session = new_session(8, p)
    try:
        async def attempt(host: str) -> tuple[str, str]:
            spec = validate_job({"id": "j", "schedule": "@hourly",
                                 "webhook": {"url": f"http://{host}:{port}/hook", "timeout_s": 0.5}})
            outcome = await deliver(session, fire, spec, "node1", "corr", egress=p)
            return outcome.status, outcome.error

        assert await attempt("127.0.0.1") == ("succeeded", "")
        outcomes = {host: await attempt(host) for host in unicode_digit_hosts()}
    finally:
        await session.close()
    assert hits == [f"127.0.0.1:{port}"]
    assert {host: o for host, o in outcomes.items() if o[0] != "failed" or "egress" not in o[1]} == {}


@pytest.mark.parametrize("host", ["①②⑦.⓪.⓪.①", "¹²⁷.⁰.⁰.¹", "127。0。0。1", "127\uff0e0\uff0e0\uff0e1",
                                  "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", "١٢٧.example"])
def test_hosts_that_are_not_proper_idna_are_refused(host: str) -> None:
    """Circled and superscript digits, ideographic and fullwidth dots, fullwidth letters: the client
    would map them to ASCII (no A-label), so they are refused as written; a right-to-left label that
    breaks the IDNA bidi rule cannot be encoded at all."""
    with pytest.raises(EgressRefused):
        policy(allow_private=True, allow_loopback=True).check_literal(f"http://{host}/")


@pytest.mark.parametrize(("url", "host"), [
    ("http://bücher.example/x", "xn--bcher-kva.example"),
    ("https://user:pw@Bücher.Example:8443/", "xn--bcher-kva.example"),
    ("http://faß.de./", "xn--fa-hia.de."),
    ("http://xn--bcher-kva.example/", "xn--bcher-kva.example"),
    ("http://Example.COM/", "example.com"),
])
async def test_proper_names_pass_as_the_client_sends_them(url: str, host: str) -> None:
    """International names stay usable; the policy judges their A-label form after DNS."""
    assert egress.connect_target(url)[0] == host
    await policy().check_url(url)  # none of these resolves here: a name that does not resolve passes


class _Registry:
    """The replica's side the node reads members from: the state, and its nodes_version."""

    def __init__(self) -> None:
        self.state = StateMachine()
        self.nodes_version = 0
        self.reads = 0

    def read(self, query: Any, *args: Any) -> Any:
        self.reads += 1
        return query(self.state, *args)

    def register(self, node_id: str, raft_addr: str, http_addr: str) -> None:
        assert self.state.apply(RegisterNode(0, node_id, raft_addr, http_addr)) == {"ok": True}
        self.nodes_version += 1


def test_a_node_reads_the_members_again_only_when_they_may_have_changed(tmp_path: Path) -> None:
    """The guard asks for the cluster's addresses before every webhook call; reading them took the
    state's lock each time, waiting behind big applies (issue 19's profile: ~10% of a follower)."""
    config = Config(NodeSection("node1", tmp_path), HttpSection(), RaftSection(), SchedulerSection(),
                    ExecutorSection(), LogSection(), egress=EgressSection(allow_private=True))
    node = Node(config)
    registry = _Registry()
    node.replica = registry  # type: ignore[assignment]
    registry.register("node2", "10.0.0.2:9001", "10.0.0.2:8001")
    for _ in range(3):
        assert "cluster" in (node.egress.reason("10.0.0.2", 8001) or "")
    assert registry.reads == 1
    assert node.egress.reason("10.0.0.7", 8001) is None
    registry.register("node7", "10.0.0.7:9001", "10.0.0.7:8001")  # a member joins
    assert "cluster" in (node.egress.reason("10.0.0.7", 8001) or "")
    assert registry.reads == 2
