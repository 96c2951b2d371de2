"""Cluster transport: the Raft cluster secret (`raft.password`) keeps strangers out, and the
HTTP API can serve TLS.

What a wrong secret looks like (pysyncobj 0.3.17, tcp_connection.py and transport.py): every
frame is Fernet-encrypted with a key derived from the password, and the first frames of a
connection exchange random session keys. A peer with another password sends frames that fail
Fernet's HMAC check; pysyncobj drops the connection silently (no log line on either side) and the
peer retries after `raft.connection_retry_s`. Nothing of it reaches Raft: no vote request, no
higher term, no log entry; nothing is unpickled before the HMAC check passes. Such a node never
counts as connected, and pysyncobj calls no election without a connected peer, so it does not
even raise its own term: fixed and restarted, it rejoins without deposing the leader.

`schedb cluster add` of a node with the wrong secret: pysyncobj applies a membership change
when appended, so the leader waits for the new member to complete the handshake and removes it
again when it does not (422).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
from collections import Counter
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devkit.devcluster import free_port, get_json, http, start_node, wait_ready, write_config
from devkit.harness import Cluster, NodeProc, Receiver
from tests.integration.workload import assert_every_second, delivered_seconds, scheduled_ms

pytestmark = pytest.mark.integration

SECRET = "cluster-secret-A"
WRONG_SECRET = "some-other-secret-B"
OBSERVE_S = 8.0
LATE_MAX_MS = 1500  # generous: on time is a few ms; an election or a stall would show as seconds


def now_ms() -> int:
    return int(time.time() * 1000)


def cluster_view(url: str) -> dict[str, Any] | None:
    """GET /api/v1/cluster, or None while the node does not answer (still starting)."""
    try:
        status, body = get_json(url + "/api/v1/cluster", 1.0)
    except OSError:
        return None
    return body if status == 200 else None


def ready_status(url: str) -> int:
    try:
        return get_json(url + "/ready", 1.0)[0]
    except OSError:
        return 0


# -- the cluster secret ----------------------------------------------------------------------


def executors(receiver: Receiver, job_ids: list[str]) -> dict[str, str]:
    """job id → node id of the follower delivering it (stable: rendezvous hashing, fixed members)."""
    return {d["job_id"]: d["node"] for d in receiver.deliveries() if d["job_id"] in job_ids}


def spread_jobs(cluster: Cluster, receiver: Receiver, prefix: str) -> tuple[NodeProc, NodeProc, dict[str, str]]:
    """Jobs `@every 1s` until both followers run some: (victim, survivor, job → executor). The
    victim's journal then holds assignments ahead of time, which its restart with the wrong
    secret must not deliver; the survivor's jobs show whether the cluster's pace is disturbed."""
    followers = cluster.followers()
    job_ids: list[str] = []
    for _ in range(4):
        new = [f"{prefix}-{len(job_ids) + i:02d}" for i in range(8)]
        for job_id in new:
            body = {"id": job_id, "schedule": "@every 1s", "webhook": {"url": receiver.url}}
            assert http("POST", cluster.leader().url + "/api/v1/jobs", body)[0] == 201
        job_ids += new
        deadline = time.monotonic() + 10
        while set(executors(receiver, job_ids)) != set(job_ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        running = executors(receiver, job_ids)
        busy = [f for f in followers if f.node_id in running.values()]
        if len(busy) == 2:
            return busy[0], busy[1], running
    raise AssertionError(f"all {len(job_ids)} jobs hashed to one follower")


def restart_with_secret(cluster: Cluster, node: NodeProc, secret: str) -> None:
    """The node's own config (same id, ports, peers, data dir) with another raft.password."""
    node.config = node.config.with_name(f"{node.node_id}-other-secret.toml")
    original = (cluster.tmp_dir / f"{node.node_id}.toml").read_text(encoding="utf-8")
    assert f'password = "{SECRET}"' in original
    node.config.write_text(original.replace(SECRET, secret), encoding="utf-8")
    cluster.start([node])


def start_outsider(cluster: Cluster, secret: str) -> NodeProc:
    """A fresh node with `raft.join` and the cluster's members as peers. Added to cluster.nodes
    before it starts, so cluster.stop() stops it by PID whatever happens."""
    node_id = f"node{len(cluster.nodes) + 1}"
    http_port, raft_port = free_port(), free_port()
    config = write_config(cluster.tmp_dir / f"{node_id}.toml", node_id, cluster.tmp_dir / f"data-{node_id}",
                          http_port, raft_port, [n.raft_port for n in cluster.nodes],
                          f'join = true\npassword = "{secret}"\n')
    node = NodeProc(node_id, config, cluster.tmp_dir / f"{node_id}.log", http_port, raft_port)
    cluster.nodes.append(node)
    cluster.start([node])
    return node


def wait_alive(cluster: Cluster, nodes: list[NodeProc]) -> None:
    """Their API answers /health (/ready it must never answer with 200)."""
    try:
        wait_ready([n.url for n in nodes], 30, pids=[n.pid for n in nodes], path="/health")
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"{exc}\n{cluster.log_tail()}") from exc


@dataclass
class Observation:
    """What the nodes said while a node with the wrong secret ran beside them."""

    survivors: list[dict[str, Any]] = field(default_factory=list)  # every answer of both good nodes
    bad_views: list[dict[str, Any]] = field(default_factory=list)  # the restarted node's answers
    bad_ready: list[int] = field(default_factory=list)  # /ready of both bad nodes
    outsider_views: list[dict[str, Any]] = field(default_factory=list)
    probes: list[tuple[int, int]] = field(default_factory=list)  # job created on one, read on the other


def observe(good: list[NodeProc], bad: NodeProc, outsider: NodeProc, seconds: float) -> Observation:
    obs = Observation()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        obs.survivors += [v for v in (cluster_view(n.url) for n in good) if v is not None]
        obs.bad_views += [v for v in [cluster_view(bad.url)] if v is not None]
        obs.outsider_views += [v for v in [cluster_view(outsider.url)] if v is not None]
        obs.bad_ready += [ready_status(bad.url), ready_status(outsider.url)]
        obs.probes.append(probe_commit(good, f"probe-{len(obs.probes)}"))
        time.sleep(0.5)
    return obs


def probe_commit(good: list[NodeProc], job_id: str) -> tuple[int, int]:
    """Create a (paused) job through one good node and read it back through the other: the two
    still form a majority that commits. A follower applies a moment after the leader: retry."""
    body = {"id": job_id, "schedule": "@every 1h", "paused": True, "webhook": {"url": "http://127.0.0.1:9/x"}}
    created = http("POST", good[0].url + "/api/v1/jobs", body)[0]
    deadline = time.monotonic() + 3
    while (read := http("GET", f"{good[1].url}/api/v1/jobs/{job_id}")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    return created, read


def assert_bad_nodes_stayed_out(obs: Observation, bad: NodeProc, outsider: NodeProc, bound: int) -> None:
    assert len(obs.bad_views) >= 5, "the node with the wrong secret hardly answered: nothing was shown"
    assert 200 not in obs.bad_ready, "a node with the wrong secret became ready"
    restored = obs.bad_views[0]["commit_index"]  # from its journal; only a leader could move it on
    assert restored <= bound, (restored, bound)
    for view in obs.bad_views:
        assert view["commit_index"] == restored and view["last_applied"] <= restored, view
        assert view["leader"]["node_id"] is None and not any(m.get("connected") for m in view["members"]), view
    assert obs.outsider_views and all(v["leader"]["node_id"] is None for v in obs.outsider_views)
    for view in obs.survivors:
        addrs = {m["raft_addr"] for m in view["members"]}
        assert f"127.0.0.1:{outsider.raft_port}" not in addrs and outsider.node_id not in {
            m["node_id"] for m in view["members"]}, view["members"]
        # `connected` is pysyncobj's: set only once the encrypted key exchange has succeeded.
        peer = next(m for m in view["members"] if m["raft_addr"] == f"127.0.0.1:{bad.raft_port}")
        assert not peer["connected"], f"a good node completed a handshake with the wrong secret: {peer}"
        assert view["role"] != "leader" or peer["match_index"] <= bound, f"the leader replicated to it: {peer}"


def assert_cluster_undisturbed(obs: Observation, leader_id: str, term: int, bound: int) -> None:
    assert {(v["leader"]["node_id"], v["term"]) for v in obs.survivors} == {(leader_id, term)}, \
        "the leader or its term changed while a node with the wrong secret ran"
    assert max(v["commit_index"] for v in obs.survivors) > bound + len(obs.probes), "the good nodes stopped committing"
    assert obs.probes and set(obs.probes) == {(201, 200)}, obs.probes


def assert_deliveries(receiver: Receiver, prefix: str, steady: set[str], victim: str,
                      window: tuple[int, int], restarted_ms: int) -> None:
    """Every second of every job delivered once; the survivor's jobs on time throughout; nothing
    from the node with the wrong secret, although its journal held fires assigned to it."""
    rows = [d for d in receiver.deliveries() if d["job_id"].startswith(prefix)]
    inside = [d for d in rows if window[0] <= scheduled_ms(d) <= window[1]]
    doubled = [f for f, n in Counter(d["fire_id"] for d in inside).items() if n > 1]
    assert doubled == [], f"fires delivered twice: {doubled}"
    seconds = delivered_seconds(inside)
    assert set(seconds) == {d["job_id"] for d in rows}, "a job delivered nothing in the window"
    assert_every_second(seconds)
    late = [(d["fire_id"], d["arrival_ms"] - scheduled_ms(d)) for d in inside if d["job_id"] in steady
            and d["arrival_ms"] - scheduled_ms(d) > LATE_MAX_MS]
    assert late == [], f"the survivor's fires were late: {late[:5]}"
    from_bad = [d["fire_id"] for d in rows if d["node"] == victim and d["arrival_ms"] >= restarted_ms]
    assert from_bad == [], f"the node with the wrong secret delivered: {from_bad[:5]}"


def test_node_with_wrong_secret_does_not_join_and_cluster_keeps_working(
        tmp_path: Path, receiver: Receiver) -> None:
    cluster = Cluster(tmp_path, extra_config=f'password = "{SECRET}"\n')
    try:
        cluster.start()
        cluster.wait_ready()
        victim, survivor, running = spread_jobs(cluster, receiver, "pw")
        leader = cluster.leader()
        term = cluster.status(leader)["term"]

        killed_ms = now_ms()
        cluster.stop([victim], sig=signal.SIGKILL)
        # The victim's journal cannot hold a commit index beyond the leader's at its death.
        bound = cluster.status(leader)["commit_index"]
        restarted_ms = now_ms()
        restart_with_secret(cluster, victim, WRONG_SECRET)
        outsider = start_outsider(cluster, WRONG_SECRET)
        wait_alive(cluster, [victim, outsider])
        obs = observe([leader, survivor], victim, outsider, OBSERVE_S)
        end_ms = now_ms()
        time.sleep(2.0)  # the fires the victim held move on after scheduler.reassign_after_s: let them land

        assert_bad_nodes_stayed_out(obs, victim, outsider, bound)
        assert_cluster_undisturbed(obs, leader.node_id, term, bound)
        steady = {j for j, n in running.items() if n == survivor.node_id}
        # From 1 s after the kill: a webhook the victim had in flight when SIGKILLed may be
        # delivered again by its new executor (at-least-once); that is not what this test is about.
        assert_deliveries(receiver, "pw-", steady, victim.node_id, (killed_ms + 1000, end_ms - 1000), restarted_ms)
        assert_add_refused(cluster, victim, outsider)
    finally:
        cluster.stop()


def assert_add_refused(cluster: Cluster, victim: NodeProc, outsider: NodeProc) -> None:
    """With all three members healthy again, `cluster add` of the outsider (wrong secret) is
    refused and undone: it never completes the Raft handshake."""
    cluster.stop([victim])
    restart_with_secret(cluster, victim, SECRET)
    cluster.wait_ready(cluster.nodes[:3])
    before = sorted(m["raft_addr"] for m in cluster.status(cluster.nodes[0])["members"])
    status, _, problem = http("POST", cluster.nodes[0].url + "/api/v1/cluster/members",
                              {"raft_addr": f"127.0.0.1:{outsider.raft_port}"})
    assert status == 422 and "handshake" in problem["detail"], problem
    assert sorted(m["raft_addr"] for m in cluster.status(cluster.nodes[1])["members"]) == before
    body = {"id": "after-add", "schedule": "@every 1h", "webhook": {"url": "http://127.0.0.1:9/"}}
    assert http("POST", cluster.nodes[1].url + "/api/v1/jobs", body)[0] == 201


# -- TLS for the HTTP API ----------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA for the client): (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "api-cert.pem", directory / "api-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tls_env(cert: Path, key: Path) -> dict[str, str]:
    # The harness writes [http] itself and TOML forbids a second table: set the files by env.
    return {"SCHEDB_HTTP_TLS_CERT_FILE": str(cert), "SCHEDB_HTTP_TLS_KEY_FILE": str(key)}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own; SCHEDB_CA_FILE only when env sets it."""
    base = {k: v for k, v in os.environ.items() if k != "SCHEDB_CA_FILE"}
    return subprocess.run([sys.executable, "-m", "schedb", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})


def test_api_serves_tls_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    cluster = Cluster(tmp_path, size=1, env=tls_env(cert, key))
    node = cluster.nodes[0]
    https_url, trusted = f"https://127.0.0.1:{node.http_port}", ssl.create_default_context(cafile=str(cert))
    try:
        cluster.start()
        try:
            wait_ready([https_url], 60, pids=[node.pid], tls=trusted)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\n{cluster.log_tail()}") from exc
        code, health = get_json(https_url + "/health", tls=trusted)
        assert code == 200 and health["status"] == "ok" and health["node_id"] == node.node_id
        status, view = get_json(https_url + "/api/v1/cluster", tls=trusted)
        assert status == 200 and view["role"] == "leader"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # really verified
            get_json(https_url + "/health", tls=ssl.create_default_context())
        with pytest.raises((OSError, HTTPException)):  # no plain HTTP on the TLS port
            get_json(node.url + "/health")
        assert '"tls": true' in node.log.read_text()  # the http_listening event (JSON: not a tty)

        assert_cli_tls(https_url, cert)
    finally:
        cluster.stop()


def assert_cli_tls(https_url: str, cert: Path) -> None:
    ok = cli("cluster", "status", "--url", https_url, "--ca-file", str(cert))
    assert ok.returncode == 0 and "leader: node1" in ok.stdout, ok.stderr
    by_env = cli("cluster", "status", "--url", https_url, "--json", env={"SCHEDB_CA_FILE": str(cert)})
    assert by_env.returncode == 0, by_env.stderr
    unverified = cli("cluster", "status", "--url", https_url)
    assert unverified.returncode == 1 and "certificate verify failed" in unverified.stderr, unverified.stderr
    insecure = cli("cluster", "status", "--url", https_url, "--insecure")
    assert insecure.returncode == 0, insecure.stderr


def test_node_with_unreadable_tls_files_exits_with_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node1.toml", "node1", tmp_path / "data-node1", free_port(), free_port(), [])
    log = tmp_path / "node1.log"
    proc = start_node(config, log, tls_env(tmp_path / "missing-cert.pem", tmp_path / "missing-key.pem"))
    try:
        assert proc.wait(timeout=30) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "config error: http.tls_cert_file" in text and "missing-cert.pem" in text and "Traceback" not in text, text
