"""GET /api/v1/events, the console's live feed, read as a plain HTTP client: what each key's
stream carries (its team's jobs, executions and dead letters, and the cluster; nothing of
another team's), and that a revoked key's stream ends."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, NodeProc, Receiver
from schedb.api.events import SUBSCRIBERS_PER_KEY_MAX
from schedb.applier import TOUCHED_IDS_MAX, TOUCHED_MAX, TouchJournal
from schedb.commands import CreateJob, CreateJobs, DeleteJob, decode, encode
from tests.integration.conftest import running_cluster
from tests.integration.keys import ADMIN_KEY, AUTH_ON, call, make_key
from tests.integration.workload import wait_for

pytestmark = pytest.mark.integration
STOP_BUDGET_S = 12.0  # SHUTDOWN_S (8 s) and the process's exit


class Stream:
    """One event stream read on a thread; `events` fills as they arrive, `ended` when it closes."""

    def __init__(self, node: NodeProc, key: str) -> None:
        self.conn = HTTPConnection("127.0.0.1", node.http_port, timeout=30)
        self.conn.request("GET", "/api/v1/events", headers={"Authorization": f"Bearer {key}"})
        self.sock = self.conn.sock  # http.client lets go of it once the response is being read
        self.response = self.conn.getresponse()
        self.events: list[dict[str, Any]] = []
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while line := self.response.readline():
                if line.startswith(b"data: "):
                    self.events.append(json.loads(line[6:]))
        except (OSError, AttributeError, ValueError):
            pass  # closed under the reader by close(): http.client drops its file then
        finally:
            self.ended.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["type"] == kind]

    def close(self) -> None:
        # Shut the socket first: closing the response waits for the reader's readline otherwise.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("events")), AUTH_ON) as cluster:
        yield cluster


def test_a_stream_carries_its_team_only(secure: Cluster, receiver: Receiver) -> None:
    a_key, b_key = make_key(secure, "a", "operator")["key"], make_key(secure, "b", "viewer")["key"]
    assert http("GET", secure.nodes[1].url + "/api/v1/events")[0] == 401
    a_stream, b_stream = Stream(secure.nodes[1], a_key), Stream(secure.nodes[2], b_key)
    admin_stream = Stream(secure.nodes[0], ADMIN_KEY)
    try:
        assert a_stream.response.status == 200
        assert a_stream.response.getheader("Content-Type") == "text/event-stream"
        wait_for(lambda: a_stream.of("hello") and b_stream.of("hello") and admin_stream.of("hello"), 10, "hellos")
        assert a_stream.events[0]["type"] == "hello" and len(a_stream.events[0]["cluster"]["members"]) == 3
        url = secure.nodes[0].url
        body = {"id": "a-beat", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
        assert call("POST", url + "/api/v1/jobs", a_key, body)[0] == 201
        doomed = {"id": "a-doomed", "schedule": "@every 1h", "retry": {"max_attempts": 1},
                  "webhook": {"url": receiver.url + "?fail=always"}}
        assert call("POST", url + "/api/v1/jobs", a_key, doomed)[0] == 201
        assert call("POST", url + "/api/v1/jobs/a-doomed/trigger", a_key, {})[0] == 202
        wait_for(lambda: len(a_stream.of("executions")) >= 3, 15, "a's executions pushed to a")
        wait_for(lambda: a_stream.of("dead_letters"), 15, "a's dead letter pushed to a")
        wait_for(lambda: len(admin_stream.of("executions")) >= 3, 15, "a's executions pushed to the admin")
        time.sleep(0.5)
        jobs_seen = {i for e in a_stream.of("jobs") for i in e["ids"]}
        assert {"a-beat", "a-doomed"} <= jobs_seen
        assert all(x["job_id"].startswith("a-") for e in a_stream.of("executions") for x in e["executions"])
        assert a_stream.of("dead_letters")[0]["added"][0].startswith("a-doomed:")
        # Team b hears of the cluster, and of nothing of team a's.
        assert b_stream.of("cluster") or b_stream.of("hello")
        assert not [e for e in b_stream.events if e["type"] in ("jobs", "executions", "dead_letters")], b_stream.events
        before = len(a_stream.events)
        assert call("DELETE", url + "/api/v1/jobs/a-beat", a_key)[0] == 204
        wait_for(lambda: any(e["type"] == "jobs" and "a-beat" in e["ids"] for e in a_stream.events[before:]), 10,
                 "the delete pushed")
    finally:
        for stream in (a_stream, b_stream, admin_stream):
            stream.close()


def test_a_revoked_keys_stream_ends(secure: Cluster) -> None:
    key = make_key(secure, "c", "viewer")
    # The key was made through node 0: node 1 knows it once it has applied that entry (a stream
    # refused before then would wait for a hello that never comes; seen once in a busy CI run).
    jobs_url = f"{secure.nodes[1].url}/api/v1/jobs"
    wait_for(lambda: call("GET", jobs_url, key["key"])[0] == 200, 10, "node 1 knows the key")
    stream = Stream(secure.nodes[1], key["key"])
    try:
        wait_for(lambda: stream.of("hello"), 10, "hello")
        assert call("DELETE", f"{secure.nodes[0].url}/api/v1/keys/{key['id']}", ADMIN_KEY)[0] == 204
        assert stream.ended.wait(10), "the stream outlived its key"
        assert stream.events[-1]["type"] == "unauthorized"
    finally:
        stream.close()


def test_a_node_stops_on_time_while_a_listener_does_not_read(tmp_path: Path, receiver: Receiver) -> None:
    """A console that stops reading (a hung tab) fills the node's send buffer: the node cuts it off
    instead of waiting for it, and SIGTERM still stops the node within its shutdown budget."""
    with running_cluster(tmp_path) as cluster:
        url = cluster.nodes[0].url
        jobs = [{"id": f"busy-{i:04d}", "schedule": "@every 1s", "webhook": {"url": receiver.url}} for i in range(1000)]
        assert http("POST", url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201, 207)
        node = cluster.nodes[0]
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # a window that fills at once
        stuck.connect(("127.0.0.1", node.http_port))
        stuck.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            time.sleep(12)  # ~450 KB of executions a second, never read
            assert http("GET", url + "/api/v1/cluster", timeout_s=5)[0] == 200  # the API still answers
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            node.proc.wait(timeout=30)
            assert time.monotonic() - started < STOP_BUDGET_S, "the node waited for the listener"
        finally:
            stuck.close()


def test_odd_commands_never_raise_in_the_apply_loop() -> None:
    """The replica's journal of touched jobs is written inside pysyncobj's apply loop: a command
    apply refuses for its odd fields must make the feed resync, never raise."""
    journal = TouchJournal()
    journal.listen(True)
    for command in (decode(encode(CreateJob(1, ["not", "a", "dict"]))), decode(encode(CreateJobs(1, 5))),  # type: ignore[arg-type]
                    CreateJob(1, {"id": "ok"}), DeleteJob(1, "gone")):
        journal.note(command)
    assert journal.drain() == [None, ("ok",), ("gone",)]  # one resync is enough
    assert journal.drain() == []


def test_the_journal_of_touched_jobs_is_bounded() -> None:
    """Past TOUCHED_MAX undrained commands, or TOUCHED_IDS_MAX job ids in them, one None:
    whoever drains resyncs. Nobody listening, nothing is kept (review: it filled on every node)."""
    journal = TouchJournal()
    journal.note(DeleteJob(1, "unheard"))
    assert journal.drain() == []
    journal.listen(True)
    for i in range(TOUCHED_MAX + 5):
        journal.note(DeleteJob(1, f"j{i}"))
    journal.note(None)
    drained = journal.drain()
    assert len(drained) == TOUCHED_MAX + 1 and drained[-1] is None and drained[0] == ("j0",)
    bulk = CreateJobs(1, [{"id": f"b{i}"} for i in range(1_000)])
    for _ in range(TOUCHED_IDS_MAX // 1_000 + 3):
        journal.note(bulk)
    drained = journal.drain()
    assert len(drained) == TOUCHED_IDS_MAX // 1_000 + 1 and drained[-1] is None
    journal.listen(False)
    journal.note(DeleteJob(1, "after"))
    assert journal.drain() == []


def test_one_key_cannot_take_every_stream_of_a_node(secure: Cluster) -> None:
    greedy, other = make_key(secure, "d", "viewer")["key"], make_key(secure, "e", "viewer")["key"]
    streams = [Stream(secure.nodes[0], greedy) for _ in range(SUBSCRIBERS_PER_KEY_MAX)]
    try:
        assert all(s.response.status == 200 for s in streams)
        status, headers, problem = http("GET", secure.nodes[0].url + "/api/v1/events",
                                        headers={"Authorization": f"Bearer {greedy}"})
        assert status == 503 and problem["type"].endswith("too-many-listeners") and headers["Retry-After"]
        fair = Stream(secure.nodes[0], other)  # another key still gets one
        assert fair.response.status == 200
        fair.close()
    finally:
        for stream in streams:
            stream.close()
