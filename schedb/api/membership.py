"""Adding and removing cluster members while the cluster runs (`schedb cluster add|remove`).

Raft allows one membership change at a time, and pysyncobj 0.3.17 does not
enforce it, so every change runs on the leader under one lock: a node that is
not the leader forwards the request to the leader's API.

Adding: the new node runs already (`raft.join = true`, peers = the current
members); the leader checks that its Raft port answers (a member that cannot be
reached would raise the quorum for nothing), commits the change, and waits for
the node to register, after which the dispatcher's rendezvous hashing gives it
its share of the jobs.

Removing: the leaving node drains first, as on SIGTERM (it takes no new fires,
hands back those it has not started, finishes and commits the running ones),
so its share moves to the others on time; then the change commits. A node that
cannot be reached is removed anyway: its fires move after
`scheduler.reassign_after_s`, as for any silent node. Removing the leader first
hands leadership to a caught-up follower, which then carries out the removal.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from schedb.api.context import NODE, json_response
from schedb.api.problems import Problem, read_json
from schedb.clock import monotonic
from schedb.config import ConfigError, parse_address
from schedb.fsm import queries
from schedb.node import SHUTDOWN_S, Node
from schedb.peers import peer_tls, peer_url
from schedb.raft import SubmitError

log = structlog.get_logger("schedb.membership")
FORWARDED = "X-Schedb-Forwarded"
CHANGE_TIMEOUT_S = 10.0
REGISTER_WAIT_S = 15.0
TRANSFER_WAIT_S = 5.0
PROBE_TIMEOUT_S = 2.0
CONNECT_WAIT_S = 5.0
CHANGE_LOCK = web.AppKey("membership_change_lock", asyncio.Lock)


async def add_member(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"raft_addr"} or not isinstance(body.get("raft_addr"), str):
        raise _invalid("raft_addr", "required: the new node's raft.listen as host:port (no other field)")
    addr = body["raft_addr"]
    try:
        parse_address("raft_addr", addr)
    except ConfigError as exc:
        raise _invalid("raft_addr", str(exc)) from exc
    if not node.replica.is_leader():
        return await _forward(request, node, body)
    async with request.app[CHANGE_LOCK]:
        if addr == node.config.raft.listen or addr in node.replica.members():
            raise Problem(409, "Already a member", f"{addr} is already a member", kind="conflict")
        if not await _listens(addr):
            raise _invalid("raft_addr", f"nothing listens on {addr}: start the new node first")
        await _change(node, "add", addr)
        if not await _wait_connected(node, addr):
            await _change(node, "remove", addr)  # a member that cannot talk only raises the quorum
            raise _invalid("raft_addr", f"{addr} never completed the Raft handshake within {CONNECT_WAIT_S:g} s "
                           "(a different raft.password?); it was removed again")
        node_id = await _wait_registered(node, addr)
    log.info("member_added", raft_addr=addr, node_id=node_id)
    return json_response({"added": addr, "node_id": node_id, "registered": node_id is not None,
                          "members": _member_list(node)}, 201)


async def remove_member(request: web.Request) -> web.Response:
    node = request.app[NODE]
    member = request.match_info["member"]
    if not node.replica.is_leader():
        return await _forward(request, node, None)
    async with request.app[CHANGE_LOCK]:
        addr, node_id, http_addr = _resolve(node, member)
        removing_self = addr == node.config.raft.listen
        if removing_self:
            await _step_down(node)
        else:
            drained = await _drain(node, http_addr, _passed_on(request)) if http_addr else None
            await _change(node, "remove", addr)
    if removing_self:  # the new leader carries it out, this node drains when it asks
        return await _forward(request, node, None, again=True)
    log.info("member_removed", raft_addr=addr, node_id=node_id, drained=drained is not None)
    return json_response({"removed": addr, "node_id": node_id, "drained": drained is not None,
                          "drain": drained, "members": _member_list(node)})


async def leave(request: web.Request) -> web.Response:
    """Called by the leader on the node it is about to remove: drain as on SIGTERM, keep running."""
    node = request.app[NODE]
    log.info("leaving_cluster")
    return json_response(await node.executor.drain(SHUTDOWN_S))


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "Invalid member", message, kind="invalid", errors=[{"field": field, "message": message}])


def _member_list(node: Node) -> list[str]:
    return sorted([node.config.raft.listen, *node.replica.members()])


def _resolve(node: Node, member: str) -> tuple[str, str | None, str | None]:
    """(raft address, node id, http address) of a member named by node id or raft address."""
    nodes = node.replica.read(queries.nodes)
    by_id = nodes.get(member)
    addr = by_id["raft_addr"] if by_id else member
    if addr not in _member_list(node):
        raise Problem(404, "Not a member", f"no member has node id or raft address {member!r}", kind="not-found")
    node_id = next((k for k, v in nodes.items() if v["raft_addr"] == addr), None)
    return addr, node_id, nodes[node_id]["http_addr"] if node_id else None


async def _change(node: Node, action: str, addr: str) -> None:
    try:
        await node.replica.change_membership(action, addr, CHANGE_TIMEOUT_S)
    except SubmitError as exc:
        raise Problem(503, "Membership change not committed", f"{action} {addr}: {exc.reason}; check "
                      "`schedb cluster status` before retrying", kind="outcome-unknown",
                      headers={"Retry-After": "1"}) from exc


async def _listens(addr: str) -> bool:
    """Does something accept connections on addr (a node just started may bind a moment late)?"""
    host, port = parse_address("raft_addr", addr)
    deadline = monotonic() + PROBE_TIMEOUT_S
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
        except (OSError, TimeoutError):
            if monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return True


async def _wait_connected(node: Node, addr: str) -> bool:
    """pysyncobj counts a peer connected only once the encrypted handshake worked, so a node
    with another cluster secret never is."""
    deadline = monotonic() + CONNECT_WAIT_S
    while monotonic() < deadline:
        peer = node.replica.view().peers.get(addr)
        if peer is not None and peer["connected"]:
            return True
        await asyncio.sleep(0.1)
    return False


async def _wait_registered(node: Node, addr: str) -> str | None:
    deadline = monotonic() + REGISTER_WAIT_S
    while monotonic() < deadline:
        found = node.replica.read(queries.node_at, addr, serving=True)
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    return None


async def _step_down(node: Node) -> None:
    if await node.hand_over_leadership():
        deadline = monotonic() + TRANSFER_WAIT_S
        while monotonic() < deadline:
            if node.replica.view().leader_addr:
                return
            await asyncio.sleep(0.05)
    raise Problem(503, "Leadership not transferred", "no follower was caught up enough to take over; retry",
                  kind="no-leader", headers={"Retry-After": "1"})


def _passed_on(request: web.Request) -> dict[str, str]:
    """The caller's credentials go along when this node asks another on the caller's behalf."""
    return {name: request.headers[name] for name in ("Authorization", "X-API-Key") if name in request.headers}


async def _drain(node: Node, http_addr: str, headers: dict[str, str]) -> dict[str, Any] | None:
    try:
        timeout = aiohttp.ClientTimeout(total=SHUTDOWN_S + 5)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.post(peer_url(node.config, http_addr, "/api/v1/cluster/leave"), json={}, headers=headers,
                             ssl=peer_tls(node.config)) as resp:
            return dict(await resp.json()) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("member_not_drained", http_addr=http_addr, error=str(exc))
        return None


async def _forward(request: web.Request, node: Node, body: Any, again: bool = False) -> web.Response:
    """Membership changes run on the leader only; pass the request on once (again: once more,
    after this node handed its leadership on)."""
    leader = node.replica.view().leader_addr
    found = node.replica.read(queries.node_at, leader)
    http_addr = found[1]["http_addr"] if found else None
    if (request.headers.get(FORWARDED) and not again) or not http_addr:
        raise Problem(503, "No leader", "membership changes need a leader; retry", kind="no-leader",
                      headers={"Retry-After": "1"})
    timeout = aiohttp.ClientTimeout(total=SHUTDOWN_S + CHANGE_TIMEOUT_S + REGISTER_WAIT_S + 5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
                request.method, peer_url(node.config, http_addr, request.path), json=body,
                headers={FORWARDED: "1", **_passed_on(request)}, ssl=peer_tls(node.config)) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type=resp.content_type)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Problem(503, "Leader unreachable", f"forwarding to the leader at {http_addr} failed: {exc}",
                      kind="no-leader", headers={"Retry-After": "1"}) from exc
