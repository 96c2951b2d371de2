"""`make cluster`, `make stop`, `make status`: the three local nodes of cluster-configs/.

Pids and logs live under .run/, data under .data/ (from the configs).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for devkit (the process helpers, not shipped in the wheel), whatever the
# current directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devkit.devcluster import get_json, is_schedb_process, pid_alive, start_node, stop_pid, wait_ready
from schedb.secretbox import generate_key_text

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
NODES = ("node1", "node2", "node3")
HTTP = {"node1": "http://127.0.0.1:8001", "node2": "http://127.0.0.1:8002", "node3": "http://127.0.0.1:8003"}


def _pid(name: str) -> int | None:
    path = RUN / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    return pid if pid and pid_alive(pid) and is_schedb_process(pid) else None


def start() -> int:
    RUN.mkdir(exist_ok=True)
    pids = []
    (ROOT / ".data").mkdir(exist_ok=True)
    env = {"SCHEDB_SECRETS_KEY_FILE": str(_secrets_key())}
    for name in NODES:
        if _pid(name):
            print(f"{name} already running (pid {_pid(name)})")
            continue
        proc = start_node(ROOT / "cluster-configs" / f"{name}.toml", RUN / f"{name}.log", env)
        (RUN / f"{name}.pid").write_text(str(proc.pid))
        pids.append(proc.pid)
        print(f"started {name} (pid {proc.pid}), log in .run/{name}.log")
    try:
        wait_ready(list(HTTP.values()), pids=pids)
    except (TimeoutError, RuntimeError) as exc:
        print(f"cluster did not become ready: {exc}; see .run/*.log", file=sys.stderr)
        return 1
    print("cluster ready: http://127.0.0.1:8001 .. 8003")
    return 0


def _secrets_key() -> Path:
    """The local cluster's secrets key (one for all three nodes), made on first start."""
    path = ROOT / ".data" / "secrets.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(generate_key_text() + "\n", encoding="utf-8")
    return path


def stop() -> int:
    for name in NODES:
        pid = _pid(name)
        if pid:
            stop_pid(pid)
            print(f"stopped {name} (pid {pid})")
        (RUN / f"{name}.pid").unlink(missing_ok=True)
    return 0


def status() -> int:
    print(f"{'NODE':6}  {'PID':>7}  {'ROLE':9}  {'LEADER':6}  {'TERM':>4}  {'COMMIT':>7}  {'JOBS':>5}")
    healthy = 0
    for name in NODES:
        pid = _pid(name)
        try:
            _, data = get_json(HTTP[name] + "/api/v1/cluster")
            row = (data["role"], data["leader"]["node_id"] or "-", data["term"], data["commit_index"], data["jobs"])
            healthy += 1
        except (OSError, KeyError, TypeError):
            row = ("down", "-", "-", "-", "-")
        print(f"{name:6}  {pid or '-':>7}  {row[0]:9}  {row[1]:6}  {row[2]:>4}  {row[3]:>7}  {row[4]:>5}")
    return 0 if healthy == len(NODES) else 1


if __name__ == "__main__":
    commands = {"start": start, "stop": stop, "status": status}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print("usage: localcluster.py start|stop|status", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())
