"""Network partitions between node processes on 127.0.0.1, with iptables (nf_tables or legacy).

Why not ports alone: pysyncobj opens one connection per pair of nodes, from an ephemeral port
of the node with the larger address to the other's Raft port. In a three-node cluster one
Raft port therefore serves two peers, and a rule on ports cannot cut one of them and keep the
other. Why not network namespaces: every node, the receiver and this script talk over
127.0.0.1, which is private to a namespace; bridging them needs other addresses.

So each node runs under its own group id (setpriv --regid, as root), and in OUTPUT on lo:
- every packet a node's socket sends ORs that node's bit into its connection's conntrack
  mark (`owner --gid-owner`, `CONNMARK --or-mark`), so a connection between two nodes soon
  carries both their bits, whichever side opened it;
- to cut a pair: DROP every packet of a connection carrying both bits (both directions,
  established ones included), and DROP what either node sends to the other's Raft or HTTP
  port (new connections: a SYN carries only its sender's bit).
The script's and the receiver's connections carry at most one bit: they are never cut.
Everything lives in one chain named after this process, removed at exit (finally and atexit).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess

from devkit.harness import Cluster, NodeProc

GID_BASE = 378_080  # arbitrary, far from distributions' system and user groups
MARK_SHIFT = 24  # conntrack mark bits 24..: clear of the low bits other tools tend to use
CHAIN_PREFIX = "SCHEDB-CHAOS-"


def gid_prefix(index: int) -> list[str]:
    """The wrapper that gives node `index` its own group id (no fork: its PID stays the node's)."""
    return ["setpriv", f"--regid={GID_BASE + index}", "--clear-groups"]


def unavailable() -> str:
    """Why partitions cannot be made here, or ""."""
    if os.geteuid() != 0:
        return "iptables needs root"
    if not shutil.which("setpriv"):
        return "setpriv (util-linux) is missing"
    if not pick_iptables():
        return "neither iptables nor iptables-legacy can create a chain here"
    return ""


def pick_iptables() -> str:
    """The first of iptables (nf_tables on current Debian) and iptables-legacy that works."""
    for tool in ("iptables", "iptables-legacy"):
        if shutil.which(tool) and subprocess.run([tool, "-w", "-S", "OUTPUT"], capture_output=True).returncode == 0:
            return tool
    return ""


class Firewall:
    def __init__(self, cluster: Cluster) -> None:
        self.tool = pick_iptables()
        self.chain = f"{CHAIN_PREFIX}{os.getpid()}"
        self.index = {node.node_id: i for i, node in enumerate(cluster.nodes)}
        self.cuts: list[list[str]] = []
        self.installed = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.tool, "-w", *args], capture_output=True, text=True, check=check)

    def install(self) -> None:
        remove_stale(self.tool)
        atexit.register(self.remove)
        self._run("-N", self.chain)
        self.installed = True
        self._run("-I", "OUTPUT", "1", "-o", "lo", "-p", "tcp", "-j", self.chain)
        for node_id, i in self.index.items():
            self._run("-A", self.chain, "-m", "owner", "--gid-owner", str(GID_BASE + i), "-m", "comment",
                      "--comment", node_id, "-j", "CONNMARK", "--or-mark", hex(self._bit(node_id)))

    def _bit(self, node_id: str) -> int:
        return 1 << (MARK_SHIFT + self.index[node_id])

    def isolate(self, victim: NodeProc, others: list[NodeProc]) -> None:
        for other in others:
            both = hex(self._bit(victim.node_id) | self._bit(other.node_id))
            for a, b in ((victim, other), (other, victim)):
                self._cut(["-m", "owner", "--gid-owner", str(GID_BASE + self.index[a.node_id]),
                           "-m", "multiport", "--dports", f"{b.raft_port},{b.http_port}"])
            self._cut(["-m", "connmark", "--mark", f"{both}/{both}"])

    def _cut(self, match: list[str]) -> None:
        rule = [self.chain, "-p", "tcp", *match, "-j", "DROP"]
        self._run("-A", *rule)
        self.cuts.append(rule)

    def heal(self) -> int:
        """Lifts the cuts; returns how many packets they dropped (proof that they cut)."""
        dropped = self.dropped()
        while self.cuts:
            self._run("-D", *self.cuts.pop())
        return dropped

    def dropped(self) -> int:
        listing = self._run("-L", self.chain, "-n", "-v", "-x").stdout.splitlines()
        return sum(int(line.split()[0]) for line in listing[2:] if line.split()[2:3] == ["DROP"])

    def remove(self) -> None:
        """Idempotent: the jump, the rules and the chain go; nothing else is touched."""
        if not self.installed:
            return
        _drop_chain(self.tool, self.chain)
        self.installed = False
        self.cuts.clear()


def _drop_chain(tool: str, chain: str) -> None:
    while subprocess.run([tool, "-w", "-D", "OUTPUT", "-o", "lo", "-p", "tcp", "-j", chain],
                         capture_output=True).returncode == 0:
        pass
    subprocess.run([tool, "-w", "-F", chain], capture_output=True)
    subprocess.run([tool, "-w", "-X", chain], capture_output=True)


def remove_stale(tool: str) -> None:
    """Chains left by an earlier run that was killed (SIGKILL skips finally and atexit)."""
    listing = subprocess.run([tool, "-w", "-S"], capture_output=True, text=True).stdout
    for pid in set(re.findall(rf"^-N {CHAIN_PREFIX}(\d+)$", listing, re.MULTILINE)):
        if not os.path.exists(f"/proc/{pid}"):
            _drop_chain(tool, f"{CHAIN_PREFIX}{pid}")
