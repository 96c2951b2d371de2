"""Start, watch and stop node processes: used by `make cluster`, the tests and the scripts.

Every process is started in its own session (so a Ctrl-C in make does not hit
it) and stopped by its PID: SIGTERM, then SIGKILL after a bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0  # above a node's own shutdown bound (schedb.node.SHUTDOWN_S)


# Below Linux's ephemeral range (32768-60999): a port picked there can be taken by some
# process's outgoing connection before the node binds it (webhooks open hundreds).
PORT_RANGE = (15_000, 32_000)


def free_ports(count: int, taken: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """`count` distinct free ports, none of them in `taken` (two draws of free_port may match)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in taken:
            ports.append(port)
    return ports


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range."""
    for _ in range(1_000):
        port = random.randrange(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def write_config(path: Path, node_id: str, data_dir: Path, http_port: int, raft_port: int,
                 peer_ports: list[int], extra: str = "") -> Path:
    peers = ", ".join(f'"127.0.0.1:{p}"' for p in peer_ports)
    path.write_text(
        f'[node]\nid = "{node_id}"\ndata_dir = "{data_dir}"\n\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n\n'
        '[egress]\n# Local tests and scripts call receivers on this machine.\nallow_loopback = true\n\n'
        f'[raft]\nlisten = "127.0.0.1:{raft_port}"\npeers = [{peers}]\n{extra}',
        encoding="utf-8",
    )
    return path


def start_node(config_path: Path, log_path: Path, env: dict[str, str] | None = None,
               prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
    """prefix: a wrapper command, e.g. ["faketime", "-f", "+1h"] for a node whose clock is off."""
    log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "schedb", "node", "--config", str(config_path)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    finally:
        log_file.close()


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout_s: float = 15.0,
         tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], Any]:
    """One JSON request: (status, headers, decoded body); error statuses are returned, not raised.
    tls: how to verify an https:// node (None: the system's CAs)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=tls) as resp:
            text = resp.read()
            return resp.status, dict(resp.headers), json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, dict(exc.headers), json.loads(text) if text else None


def get_json(url: str, timeout_s: float = 2.0, tls: ssl.SSLContext | None = None) -> tuple[int, Any]:
    status, _, body = http("GET", url, timeout_s=timeout_s, tls=tls)
    return status, body


def wait_ready(http_urls: list[str], timeout_s: float = READY_TIMEOUT_S, pids: Sequence[int] = (),
               path: str = "/ready", tls: ssl.SSLContext | None = None) -> None:
    """Wait until every URL answers `path` (/ready, or /health for a node not yet in a cluster)
    with 200; fail early if one of pids has exited. tls: for https:// URLs, as in http()."""
    deadline = time.monotonic() + timeout_s
    pending = list(http_urls)
    while pending:
        dead = [pid for pid in pids if not pid_alive(pid)]
        if dead:
            raise RuntimeError(f"node process(es) {dead} exited before becoming ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready within {timeout_s:.0f} s: {', '.join(pending)}")
        still = []
        for url in pending:
            try:
                status, _ = get_json(url + path, 1.0, tls)
            except OSError:
                status = 0
            if status != 200:
                still.append(url)
        pending = still
        if pending:
            time.sleep(0.2)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: it only waits for its parent to reap it
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def is_schedb_process(pid: int) -> bool:
    try:
        return b"schedb" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S, sig: int = signal.SIGTERM) -> None:
    """Send sig, wait up to timeout_s for the process to go, then SIGKILL it."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while pid_alive(pid):
        _reap(pid)
        time.sleep(0.02)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(pid, os.WNOHANG)
