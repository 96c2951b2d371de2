"""The cluster's nodes inside the replicated state: registration and draining.

Functions of (state, command), called by apply (schedb.fsm.machine); deterministic.
A node registers itself with its addresses (RegisterNode, at start and whenever
its record is not what it should be); a node shutting down drains (DrainNode):
it takes no new fires, and gives back the ones it has not started.
"""

from __future__ import annotations

from schedb.commands import DrainNode, RegisterNode
from schedb.fsm.core import State
from schedb.fsm.fires import PENDING
from schedb.fsm.model import Result

NODE_FIELD_LEN_MAX = 128


def register_node(state: State, cmd: RegisterNode) -> Result:
    for value in (cmd.node_id, cmd.raft_addr, cmd.http_addr):
        if not isinstance(value, str) or not 0 < len(value) <= NODE_FIELD_LEN_MAX:
            return {"error": "invalid", "detail": "node id and addresses must be short strings"}
    for other_id, other in state.nodes.items():
        if other["raft_addr"] == cmd.raft_addr and other_id != cmd.node_id:
            return {"error": "conflict", "detail": f"raft address already registered by {other_id}"}
    state.nodes[cmd.node_id] = {"raft_addr": cmd.raft_addr, "http_addr": cmd.http_addr,
                                "registered_ms": state.now_ms, "draining": False}
    return {"ok": True}


def drain_node(state: State, cmd: DrainNode) -> Result:
    node = state.nodes.get(cmd.node_id) if isinstance(cmd.node_id, str) else None
    if node is None or not isinstance(cmd.release, list) or len(cmd.release) > state.limits.assign_batch_max:
        return {"error": "invalid", "detail": "unknown node, or release is not a bounded list"}
    node["draining"] = True
    released = 0
    for row in cmd.release:
        well_formed = isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
        fire = state.book.get(row[0]) if well_formed else None
        if fire is not None and fire["node"] == cmd.node_id and fire["attempt"] == row[1]:
            state.book.move(fire, PENDING)  # never started there: the same attempt goes elsewhere
            released += 1
    return {"ok": True, "released": released}
