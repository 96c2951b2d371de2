"""Real node processes and a real webhook receiver on free ports, for tests, chaos and benchmarks
(in the style of rqlite's system_test helpers)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.devcluster import free_port, free_ports, get_json, pid_alive, start_node, stop_pid, wait_ready, write_config

# Started by its file path, not the current directory (nor the package name: the repo root need
# not be on the child's sys.path).
RECEIVER = Path(__file__).resolve().with_name("receiver.py")


@dataclass
class NodeProc:
    node_id: str
    config: Path
    log: Path
    http_port: int
    raft_port: int
    proc: subprocess.Popen[bytes] | None = None
    # A wrapper the node runs under, e.g. ["faketime", "-f", "+1h"]: set before start().
    prefix: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def children_of(pid: int) -> list[int]:
    """The PIDs of a process's children (Linux /proc); [] once it is gone."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_python(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("python")
    except OSError:
        return False


@dataclass
class Cluster:
    """N nodes in tmp_dir; every process is stopped by PID in stop(), even after a failed test."""

    tmp_dir: Path
    size: int = 3
    extra_config: str = ""
    # Environment for every node process (SCHEDB_* settings the TOML cannot carry, e.g. [http]
    # TLS files: the harness writes that table itself and TOML forbids a second one).
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        http_ports, raft_ports = ports[:self.size], ports[self.size:]
        for i in range(self.size):
            peers = [p for j, p in enumerate(raft_ports) if j != i]
            self._add_node(http_ports[i], raft_ports[i], peers, self.extra_config)

    def new_member(self) -> NodeProc:
        """Start one more node that will join this cluster (`raft.join`); stop() stops it too."""
        taken = {p for n in self.nodes for p in (n.http_port, n.raft_port)}
        http_port, raft_port = free_ports(2, taken)
        node = self._add_node(http_port, raft_port, [n.raft_port for n in self.nodes],
                              "join = true\n" + self.extra_config)
        self.start([node])
        wait_ready([node.url], pids=[node.pid], path="/health")  # alive; /ready needs it to be a member
        return node

    def _add_node(self, http_port: int, raft_port: int, peers: list[int], extra: str) -> NodeProc:
        node_id = f"node{len(self.nodes) + 1}"
        config = write_config(self.tmp_dir / f"{node_id}.toml", node_id, self.tmp_dir / f"data-{node_id}",
                              http_port, raft_port, peers, extra)
        self.nodes.append(NodeProc(node_id, config, self.tmp_dir / f"{node_id}.log", http_port, raft_port))
        return self.nodes[-1]

    def start(self, nodes: list[NodeProc] | None = None) -> None:
        for node in nodes or self.nodes:
            node.proc = start_node(node.config, node.log, self.env, node.prefix)

    def wait_ready(self, nodes: list[NodeProc] | None = None, timeout_s: float = 60.0) -> None:
        nodes = nodes or self.nodes
        try:
            wait_ready([n.url for n in nodes], timeout_s, pids=[n.pid for n in nodes])
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from exc

    def stop(self, nodes: list[NodeProc] | None = None, sig: int = signal.SIGTERM) -> None:
        for node in nodes or self.nodes:
            if node.proc is not None and node.prefix and not _is_python(node.proc.pid):
                # A wrapper such as faketime forks the node and does not pass signals on: the
                # node is stopped by its own PID first. (A wrapper that execs, as setpriv does,
                # is the node itself: its children are pysyncobj's snapshot forks.)
                for child in children_of(node.proc.pid):
                    if pid_alive(child):
                        stop_pid(child, sig=sig)
            if node.proc is not None and pid_alive(node.proc.pid):
                stop_pid(node.proc.pid, sig=sig)
            if node.proc is not None:
                node.proc.wait(timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for node in self.nodes:
            text = node.log.read_text(errors="replace").splitlines() if node.log.exists() else []
            out.append(f"--- {node.node_id} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def status(self, node: NodeProc) -> dict[str, Any]:
        return get_json(node.url + "/api/v1/cluster")[1]

    def leader(self, timeout_s: float = 10.0) -> NodeProc:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                try:
                    if self.status(node)["role"] == "leader":
                        return node
                except OSError:
                    continue
            time.sleep(0.1)
        raise AssertionError("no leader")

    def followers(self) -> list[NodeProc]:
        leader = self.leader()
        return [n for n in self.nodes if n is not leader]


class Receiver:
    """devkit/receiver.py as a process; deliveries() reads its ledger."""

    def __init__(self, tmp_dir: Path) -> None:
        self.port = free_port()
        self.ledger = tmp_dir / "deliveries.jsonl"
        self.log = tmp_dir / "receiver.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(RECEIVER), "--port", str(self.port),
                 "--ledger", str(self.ledger)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_listening(deadline=time.monotonic() + 15)
        except BaseException:
            self.stop()  # nobody else holds this process yet: never leave it behind
            raise

    def _wait_listening(self, deadline: float) -> None:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", data=b"{}", timeout=1).read()
                return
            except urllib.error.HTTPError:
                return  # it answered: it listens
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def deliveries(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        rows = [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]
        return [r for r in rows if r["fire_id"]]

    def stop(self) -> None:
        stop_pid(self.proc.pid)
        self.proc.wait(timeout=10)
