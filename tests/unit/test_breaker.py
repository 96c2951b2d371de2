"""The circuit breaker per webhook target (schedb.breaker), its states and what it records."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schedb import breaker, clock
from schedb.breaker import Breakers, target_failed, target_of
from schedb.clock import FakeClock
from schedb.commands import Outcome
from schedb.config import BreakerSection
from schedb.metrics import NodeMetrics

T0 = 1_800_000_000_000
SETTINGS = BreakerSection(failures=5, failure_rate=0.5, window_s=30.0, window_calls_min=20, cooldown_s=30.0)


class Target:
    """The receiver's side: answers each call with the status it is set to, and counts calls."""

    def __init__(self) -> None:
        self.http_status = 200
        self.error = ""
        self.calls = 0
        self.hold: asyncio.Event | None = None

    async def send(self, fire: dict[str, Any], spec: dict[str, Any], correlation_id: str,
                   secret_values: list[str]) -> Outcome:
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        status = "succeeded" if 200 <= self.http_status < 300 else "failed"
        now_ms = clock.wall_ms()
        return Outcome(fire["fire_id"], fire["attempt"], status, self.http_status, now_ms, now_ms, self.error)


def guarded(breakers: Breakers, target: Target, team: str = "team-a") -> Any:
    """The executor's call of a webhook through the breaker (schedb.executor.Executor._call)."""
    async def send(fire: dict[str, Any], spec: dict[str, Any], correlation_id: str, secrets: list[str]) -> Outcome:
        return await breakers.call(team, fire, spec, lambda: target.send(fire, spec, correlation_id, secrets))
    return send


def fire(n: int = 0) -> dict[str, Any]:
    return {"fire_id": f"job:{n}", "attempt": 1}


SPEC = {"webhook": {"url": "http://Receiver.example:8080/hook?x=1", "timeout_s": 5}}


@pytest.fixture
def fake() -> Any:
    fake = FakeClock(wall_ms=T0, monotonic=100.0)
    with clock.use(fake):
        yield fake


async def call_n(send: Any, n: int) -> list[Outcome]:
    return [await send(fire(i), SPEC, "c", []) for i in range(n)]


async def test_five_failures_in_a_row_open_the_circuit_and_later_fires_are_not_called(fake: FakeClock) -> None:
    target, metrics = Target(), NodeMetrics()
    target.http_status = 503
    send = guarded(Breakers(SETTINGS, metrics), target)
    await call_n(send, 5)
    assert target.calls == 5
    refused = await call_n(send, 100)
    assert target.calls == 5, "an open circuit calls nobody"
    assert all(o.status == "failed" and o.http_status == 0 and o.error.startswith("circuit_open: ")
               for o in refused)
    assert "http://receiver.example:8080" in refused[0].error
    assert 29_000 <= refused[0].retry_after_ms <= 30_000  # the next attempt after the cool-down
    assert metrics.circuit_state.labels("team-a", "http://receiver.example:8080", "")._value.get() == 2


async def tripped(http_status: int = 503) -> tuple[Target, Breakers, Any]:
    """A target answering http_status, called until its circuit opened (5 calls)."""
    target, breakers = Target(), Breakers(SETTINGS)
    target.http_status = http_status
    send = guarded(breakers, target)
    await call_n(send, 5)
    return target, breakers, send


async def test_after_the_cool_down_one_probe_goes_through_at_a_time(fake: FakeClock) -> None:
    target, breakers, send = await tripped()
    fake.advance(30.0)
    target.http_status, target.hold = 200, asyncio.Event()
    probe = asyncio.create_task(send(fire(1), SPEC, "c", []))
    await asyncio.sleep(0)
    others = await call_n(send, 10)  # while the probe is out
    assert target.calls == 6 and all(o.error.startswith("circuit_open") for o in others)
    assert breakers.circuits()[0]["state"] == "half_open"
    target.hold.set()
    assert (await probe).status == "succeeded"
    assert breakers.circuits() == []  # closed, no failure since
    await call_n(send, 3)
    assert target.calls == 9


async def test_a_failed_probe_opens_the_circuit_for_another_cool_down(fake: FakeClock) -> None:
    target, breakers, send = await tripped(504)
    fake.advance(30.0)
    await call_n(send, 1)  # the probe fails
    assert target.calls == 6
    fake.advance(29.0)
    await call_n(send, 5)
    assert target.calls == 6
    fake.advance(1.0)
    await call_n(send, 1)
    assert target.calls == 7 and breakers.circuits()[0]["opened"] == 3


async def test_a_call_from_before_the_circuit_opened_does_not_close_it(fake: FakeClock) -> None:
    target = Target()
    breakers = Breakers(SETTINGS)
    send = guarded(breakers, target)
    slow_answer = target.hold = asyncio.Event()
    slow = asyncio.create_task(send(fire(99), SPEC, "c", []))  # made while closed, answered late
    await asyncio.sleep(0)
    target.hold, target.http_status = None, 503
    await call_n(send, 5)
    fake.advance(30.0)
    probe_answer = target.hold = asyncio.Event()
    probe = asyncio.create_task(send(fire(1), SPEC, "c", []))
    await asyncio.sleep(0)
    target.http_status = 200
    slow_answer.set()
    assert (await slow).status == "succeeded"
    assert breakers.circuits()[0]["state"] == "half_open", "the probe decides, not a call from before"
    probe_answer.set()
    assert (await probe).status == "succeeded" and breakers.circuits() == []
    assert target.calls == 7


async def test_a_probe_cancelled_mid_call_lets_the_next_fire_probe(fake: FakeClock) -> None:
    target, _, send = await tripped()
    fake.advance(30.0)
    target.hold = asyncio.Event()
    probe = asyncio.create_task(send(fire(1), SPEC, "c", []))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    target.hold, target.http_status = None, 200
    assert (await call_n(send, 1))[0].status == "succeeded"
    assert target.calls == 7


async def test_a_failure_rate_over_the_window_opens_it_though_successes_come_between(fake: FakeClock) -> None:
    target = Target()
    send = guarded(Breakers(SETTINGS), target)
    for i in range(20):
        target.http_status = 503 if i % 2 else 200
        await send(fire(i), SPEC, "c", [])
        fake.advance(0.5)
    target.http_status = 200
    refused = await call_n(send, 1)
    assert refused[0].error.startswith("circuit_open"), "10 of the last 20 calls failed"


async def test_calls_older_than_the_window_do_not_count(fake: FakeClock) -> None:
    target = Target()
    send = guarded(Breakers(SETTINGS), target)
    for i in range(40):
        target.http_status = 503 if i < 19 and i % 5 else 200
        await send(fire(i), SPEC, "c", [])
        fake.advance(2.0)
    assert target.calls == 40


def test_what_counts_as_the_target_failing() -> None:
    def outcome(status: str, http_status: int, error: str = "") -> Outcome:
        return Outcome("f", 1, status, http_status, T0, T0, error)

    assert target_failed(outcome("failed", 0, "ClientConnectorError: refused"))
    assert target_failed(outcome("timed_out", 0, "no answer within 5 s"))
    for http_status in (429, 502, 503, 504):
        assert target_failed(outcome("failed", http_status))
    for http_status in (200, 302, 400, 404, 500):  # the target answered: it is up
        assert target_failed(outcome("succeeded" if http_status == 200 else "failed", http_status)) is False
    # Never reached, or its answer never came back: nothing said of the target either way.
    assert target_failed(outcome("failed", 0, "refused by the egress policy: 10.0.0.1 is private")) is None
    assert target_failed(outcome("failed", 0, "ClientConnectorError: Cannot connect to host h:80 ssl:default "
                                              "[refused by the egress policy: h resolves to 10.0.0.1]")) is None
    assert target_failed(outcome("failed", 0, "worker_lost: delivery worker 7 ended (exit -9) during the call")) is None
    assert target_failed(outcome("failed", 0, "worker_late: no delivery worker could start it in time")) is None
    assert target_failed(outcome("failed", 0, "worker_error: KeyError: 'x'")) is None
    # What a receiver sends is never read as schedb's own text; headers and then silence is no answer.
    assert target_failed(outcome("failed", 0, "ClientResponseError: 400, refused by the egress policy")) is True
    assert target_failed(outcome("timed_out", 200, "no answer within 5 s")) is True


async def test_a_probe_whose_worker_died_neither_closes_nor_reopens_the_circuit(fake: FakeClock) -> None:
    """The probe's call was lost with its delivery worker: the target said nothing, so the
    circuit stays half-open and the next fire probes."""
    target, breakers, send = await tripped()
    fake.advance(30.0)
    target.http_status, target.error = 0, "worker_lost: delivery worker 7 ended (exit -9) during the call"
    await call_n(send, 1)
    assert breakers.circuits()[0]["state"] == "half_open" and breakers.circuits()[0]["failures_in_a_row"] == 5
    target.http_status, target.error = 200, ""
    assert (await send(fire(2), SPEC, "c", [])).status == "succeeded"  # the next probe, at once
    assert breakers.circuits() == []


def test_a_target_is_its_scheme_host_and_port() -> None:
    assert target_of("https://API.example/a?b") == "https://api.example:443"
    assert target_of("http://api.example/") == "http://api.example:80"
    assert target_of("http://[::1]:9000/x") == "http://[::1]:9000"


async def test_the_circuits_remembered_are_bounded(fake: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker, "CIRCUITS_MAX", 3)
    target = Target()
    breakers = Breakers(SETTINGS)
    send = guarded(breakers, target)
    for port in range(10):
        await send(fire(port), {"webhook": {"url": f"http://h:{8000 + port}/", "timeout_s": 5}}, "c", [])
    assert len(breakers._circuits) == 3


async def test_off_it_calls_every_fire(fake: FakeClock) -> None:
    target = Target()
    target.http_status = 503
    send = guarded(Breakers(BreakerSection(enabled=False)), target)
    await call_n(send, 50)
    assert target.calls == 50


async def test_one_teams_failing_endpoint_does_not_stop_another_teams_calls_to_the_host(fake: FakeClock) -> None:
    """Review: team A's job on a shared host (a gateway) answers 503; team B's calls there go on."""
    breakers = Breakers(SETTINGS)
    a, b = Target(), Target()
    a.http_status = 503
    await call_n(guarded(breakers, a, "team-a"), 10)
    assert a.calls == 5
    await call_n(guarded(breakers, b, "team-b"), 10)
    assert b.calls == 10


async def test_a_fire_refused_while_the_probe_is_out_comes_back_after_the_probe_must_have_ended(
        fake: FakeClock) -> None:
    """Review: every refused fire came back at the end of the cool-down; one probed, the others
    were refused for 2 s and used their last attempt while the probe (timeout 30 s) was still out.
    A fire refused while the probe is out comes back once the probe's timeout has passed."""
    target, _, send = await tripped()
    fake.advance(30.0)
    target.hold = asyncio.Event()
    spec = {"webhook": {**SPEC["webhook"], "timeout_s": 20}}
    probe = asyncio.create_task(send(fire(1), spec, "c", []))
    await asyncio.sleep(0)
    fake.advance(5.0)
    refused = await send(fire(2), spec, "c", [])
    assert refused.error.startswith("circuit_open") and 15_500 <= refused.retry_after_ms <= 16_500
    target.hold.set()
    await probe


async def test_a_circuit_unused_for_an_hour_is_forgotten_even_open(fake: FakeClock) -> None:
    """A job's own settings edited while its circuit was open: nothing calls through that
    circuit again, and it must not stay open (and in the metric) for ever."""
    target, metrics = Target(), NodeMetrics()
    target.http_status = 503
    breakers = Breakers(SETTINGS, metrics)
    send = guarded(breakers, target)
    await call_n(send, 5)
    assert breakers.circuits()[0]["state"] == "open"
    fake.advance(3_601.0)
    await send(fire(1), {"webhook": {"url": "http://other:1/", "timeout_s": 5}}, "c", [])
    assert [c["target"] for c in breakers.circuits()] == ["http://other:1"]
    assert metrics.registry.get_sample_value(
        "schedb_circuit_state", {"team": "team-a", "target": "http://receiver.example:8080", "settings": ""}) is None


async def test_a_new_circuit_is_kept_when_the_remembered_ones_are_all_open(
        fake: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker, "CIRCUITS_MAX", 2)
    breakers = Breakers(SETTINGS)
    target = Target()
    target.http_status = 503
    send = guarded(breakers, target)
    for port in (1, 2):
        for _ in range(5):
            await send(fire(port), {"webhook": {"url": f"http://h:{port}/", "timeout_s": 5}}, "c", [])
    target.http_status = 200
    await send(fire(3), {"webhook": {"url": "http://h:3/", "timeout_s": 5}}, "c", [])
    assert ("team-a", "http://h:3", ()) in breakers._circuits


async def test_a_job_with_settings_of_its_own_has_a_circuit_of_its_own(fake: FakeClock) -> None:
    """spec["breaker"] (schedb.jobspec): the job's calls to a target go through a circuit for its
    settings, which opens and cools down by them; the other jobs' circuit to the target is not touched."""
    target, metrics = Target(), NodeMetrics()
    target.http_status = 503
    breakers = Breakers(SETTINGS, metrics)
    send = guarded(breakers, target)
    touchy = {**SPEC, "breaker": {"failures": 2, "cooldown_s": 5.0}}
    assert [o.http_status for o in [await send(fire(i), touchy, "c", []) for i in range(2)]] == [503, 503]
    refused = await send(fire(3), touchy, "c", [])
    assert refused.error.startswith("circuit_open") and 4_000 <= refused.retry_after_ms <= 5_000
    assert (await send(fire(4), SPEC, "c", [])).http_status == 503  # the node's settings: still closed
    assert target.calls == 3
    (own,) = [c for c in breakers.circuits() if c["state"] == "open"]
    assert own["override"] == {"failures": 2, "cooldown_s": 5.0}
    settings = "failures=2,cooldown_s=5.0"
    assert metrics.circuit_state.labels("team-a", "http://receiver.example:8080", settings)._value.get() == 2
    fake.advance(5.0)
    target.http_status = 200
    assert (await send(fire(5), touchy, "c", [])).status == "succeeded"  # its probe, after its cool-down
    assert [c for c in breakers.circuits() if c["override"]] == []


async def test_a_job_with_the_breaker_off_is_always_called(fake: FakeClock) -> None:
    target, _, send = await tripped()
    assert (await send(fire(9), SPEC, "c", [])).error.startswith("circuit_open")
    off = {**SPEC, "breaker": {"enabled": False}}
    outcomes = [await send(fire(i), off, "c", []) for i in range(20)]
    assert target.calls == 5 + 20 and all(o.http_status == 503 for o in outcomes)
