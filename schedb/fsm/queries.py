"""The read port: named queries on the State for the node's other parts (the API, the executor,
the clock watch, the node itself), so that none of them knows the state's raw layout.

Each query is a plain function `(state, *args) -> plain data`, run by `Replica.read(query, *args)`
(schedb.raft) on the asyncio loop, under the lock that serializes reads with apply. What a query
returns is a copy, never a live reference into the state: its caller uses it after the lock is
released, while the tick thread goes on applying. A query never changes the state, logs or reads
a clock (time comes in as `now_ms`). Reads that must see one state together are one query.
The executor's and dispatcher's decisions, which need more than the state, are in
schedb.fire_queries; the job list in schedb.fsm.job_list; the console's event feed in
schedb.fsm.feed_queries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, TypeVar, cast

from schedb.fsm import limits, tenancy, workflow
from schedb.fsm.core import State
from schedb.fsm.model import USAGE_FIELDS, ApiKey, AuditRecord, DeadLetter, Execution, Job, NodeRecord, Secret

T = TypeVar("T")
Actor = dict[str, Any]  # who asks (schedb.api.auth): the records of other teams are not there for them


def plain_copy(value: T, depth: int = -1) -> T:
    """A deep copy of a record: records hold only dicts, lists, tuples and immutable values.
    (Several times quicker than copy.deepcopy: the job list copies up to a thousand jobs.)
    depth: how many levels of containers to copy; deeper ones are shared (-1: all)."""
    if depth == 0:
        return value
    kind = type(value)
    if kind is dict:
        items = cast(dict[Any, Any], value).items()
        return cast(T, {k: v if type(v) in _ATOMS else plain_copy(v, depth - 1) for k, v in items})
    if kind is list or kind is tuple:
        return cast(T, kind(v if type(v) in _ATOMS else plain_copy(v, depth - 1) for v in cast(list[Any], value)))
    assert not isinstance(value, dict | list | set | deque), f"a record holds a {kind.__name__}"
    return value


# A job is copied down to its webhook (job, spec, webhook): what lies deeper (the webhook's body
# and headers, a parameters schema, a registration's fields) is shared, for apply never changes
# a spec in place but replaces it (fsm.jobs, fsm.registry). A body of up to 64 KB of small
# objects would otherwise cost ~13 ms per job to copy, under the lock that apply waits for.
JOB_COPY_DEPTH = 3


def job_copy(job: Job) -> Job:
    """A job's record to read outside the state lock (JOB_COPY_DEPTH)."""
    return plain_copy(job, JOB_COPY_DEPTH)


_ATOMS = frozenset({str, int, float, bool, bytes, type(None)})


def _copies(records: Iterable[T]) -> list[T]:
    return [plain_copy(record) for record in records]


# -- nodes ----------------------------------------------------------------------------------


def node_addresses(state: State) -> dict[str, tuple[str, str]]:
    """node id -> (Raft address, API address) of every registered node, in registration order."""
    return {node_id: (node["raft_addr"], node["http_addr"]) for node_id, node in state.nodes.items()}


def nodes(state: State) -> dict[str, NodeRecord]:
    """node id -> its record (addresses, draining) of every registered node."""
    return {node_id: plain_copy(node) for node_id, node in state.nodes.items()}


def node_record(state: State, node_id: str) -> NodeRecord | None:
    """The node's record, or None when it is not registered."""
    node = state.nodes.get(node_id)
    return None if node is None else plain_copy(node)


def node_at(state: State, raft_addr: str | None, serving: bool = False) -> tuple[str, NodeRecord] | None:
    """(node id, record) of the first node registered with this Raft address (serving: and not
    draining), or None."""
    for node_id, node in state.nodes.items():
        if node["raft_addr"] == raft_addr and not (serving and node.get("draining")):
            return node_id, plain_copy(node)
    return None


def cluster_counts(state: State) -> dict[str, Any]:
    """The registered nodes, the counts of jobs, fires and dead letters, the counters, and per node
    the fires it holds (`fires_by_node`) and the distinct jobs they belong to (`jobs_by_node`)."""
    book = state.book
    return {"nodes": nodes(state), "jobs": len(state.jobs), "active_fires": len(book),
            "counters": dict(state.counters), "fires_by_node": {k: len(v) for k, v in book.by_node.items()},
            "jobs_by_node": {k: len({book.fires[f]["job_id"] for f in v}) for k, v in book.by_node.items()},
            "pending_fires": len(book.pending), "dead_letters": len(state.dead_letters)}


def state_numbers(state: State) -> dict[str, Any]:
    """What the node's metrics export: counts, the counters, and each team's usage."""
    return {"jobs": len(state.jobs), "active_fires": len(state.book), "pending_fires": len(state.book.pending),
            "dead_letters": len(state.dead_letters), "counters": dict(state.counters),
            "usage": {team: dict(usage) for team, usage in state.usage.items()}}


def job_count(state: State) -> int:
    """How many jobs the state holds (schedb.heap freezes again when they grew by a quarter)."""
    return len(state.jobs)


def replicated_now(state: State) -> int:
    """Replicated time: the leader's clock as of the last command applied (Unix ms)."""
    return state.now_ms


def config_defaults(state: State) -> tuple[dict[str, int], dict[str, int]]:
    """(every team's default quotas, the configurable bounds) as the state has them now."""
    return dict(state.default_quotas), limits.current(state.limits)


# -- fires (the executor) -------------------------------------------------------------------


def fire_changes(state: State, node_id: str, since: int) -> tuple[int, bool, dict[str, dict[str, Any] | None]] | None:
    """None when node_id's fires did not change after version `since`; else State.fire_changes:
    (version now, whether it is the full set, {fire_id: a copy of the fire, or None: not its})."""
    if state.book.version_of(node_id) == since:
        return None
    version, full, changed = state.fire_changes(node_id, since)
    return version, full, {fire_id: plain_copy(fire) for fire_id, fire in changed.items()}


def job_delivery(state: State, job_id: str) -> str | None:
    """The job's delivery guarantee (at_least_once, at_most_once), or None when it is gone."""
    job = state.jobs.get(job_id)
    return None if job is None else str(job["spec"]["delivery"])


# -- jobs and their executions --------------------------------------------------------------


def job(state: State, job_id: str) -> Job | None:
    """The job's record, or None when there is no such job (its team is the caller's to check)."""
    found = state.jobs.get(job_id)
    return None if found is None else job_copy(found)


def job_history(state: State, job_id: str, actor: Actor) -> tuple[list[Execution], int] | None:
    """(the job's execution records, oldest first; how many its ring keeps), or None when there is
    no such job or it is another team's."""
    found = state.jobs.get(job_id)
    if found is None or not tenancy.can_touch(actor, found):
        return None
    return _copies(state.history.get(job_id, ())), state.limits.history_per_job


def recent_executions(state: State, actor: Actor, status: str | None, job_id: str | None,
                      limit: int) -> list[Execution]:
    """The cluster's newest execution records, newest first, at most `limit`, of this status and
    job when given: those of the actor's team only, and not those of an earlier job of the same id."""
    out: list[Execution] = []
    for row in reversed(state.recent):
        if (status is None or row["status"] == status) and (job_id is None or row["job_id"] == job_id) \
                and _sees_execution(state, actor, row):
            out.append(plain_copy(row))
            if len(out) >= limit:
                break
    return out


def _sees_execution(state: State, actor: Actor, row: Execution) -> bool:
    found = state.jobs.get(row["job_id"])
    return tenancy.is_admin(actor) or (found is not None and tenancy.can_touch(actor, found)
                                       and row["committed_ms"] >= found["created_ms"])


def registered_jobs(state: State, actor: Actor, service: str | None) -> list[Job]:
    """The jobs services registered (of this service when given) that the actor's team may see."""
    return [job_copy(found) for found in state.jobs.values()
            if found.get("registration") and (service is None or found["registration"]["service"] == service)
            and tenancy.can_touch(actor, found)]


def dead_letters(state: State, actor: Actor, job_id: str | None, limit: int) -> tuple[list[DeadLetter], int]:
    """(the newest dead letters the actor's team may see, of this job when given, at most `limit`;
    how many there are in all)."""
    out: list[DeadLetter] = []
    total = 0
    for letter in reversed(state.dead_letters.values()):
        if (job_id is None or letter["job_id"] == job_id) and tenancy.can_touch(actor, state.jobs[letter["job_id"]]):
            total += 1
            if len(out) < limit:
                out.append(plain_copy(letter))
    return out, total


def run(state: State, run_id: str, actor: Actor) -> dict[str, Any] | None:
    """The workflow run (schedb.fsm.workflow.run_view), or None when it is gone or another team's."""
    found = state.runs.get(run_id)
    return plain_copy(workflow.run_view(found)) if found is not None and _sees_run(actor, found) else None


def runs(state: State, actor: Actor, job_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest workflow runs (run_view) the actor's team may see, with a step of this job when
    given, at most `limit`."""
    out = []
    for found in reversed(state.runs.values()):
        if (job_id is None or job_id in found["steps"]) and _sees_run(actor, found):
            out.append(plain_copy(workflow.run_view(found)))
            if len(out) >= limit:
                break
    return out


def _sees_run(actor: Actor, found: dict[str, Any]) -> bool:
    return tenancy.is_admin(actor) or found["team"] == actor.get("team")


# -- teams: usage, quotas, keys, secrets, audit ---------------------------------------------


def team_usage(state: State, team: str, now_ms: int) -> dict[str, Any]:
    """What the team used since the cluster began, its jobs, fires in the minute of now_ms,
    secrets, and quotas."""
    window = state.fire_windows.get(team, [0, 0])
    this_minute = window[1] if window[0] == now_ms // tenancy.MINUTE_MS else 0
    return {"team": team, "usage": dict(state.usage.get(team) or dict.fromkeys(USAGE_FIELDS, 0)),
            "jobs": state.team_jobs.get(team, 0), "fires_this_minute": this_minute,
            "secrets": len(state.secrets.get(team, ())), "quotas": tenancy.quota(state, team)}


def team_quotas(state: State, team: str) -> dict[str, int]:
    """The team's quotas: its own where set, every team's defaults for the rest."""
    return tenancy.quota(state, team)


def quota_settings(state: State, team: str) -> tuple[dict[str, int], list[str]]:
    """(the team's quotas, the sorted names of those set for the team itself)."""
    return tenancy.quota(state, team), sorted(state.quotas.get(team, ()))


def key_by_hash(state: State, key_hash: str) -> ApiKey | None:
    """The live API key whose token has this sha256, or None."""
    return tenancy.key_by_hash(state, key_hash)


def api_key(state: State, key_id: str) -> ApiKey | None:
    """The API key (live or revoked), or None."""
    key = state.api_keys.get(key_id)
    return None if key is None else plain_copy(key)


def api_keys(state: State, team: str | None) -> list[ApiKey]:
    """Every API key (of this team when given), live or revoked, in the order they were made."""
    return [plain_copy(key) for key in state.api_keys.values() if team is None or key["team"] == team]


def secret_names(state: State, team: str) -> set[str]:
    """The names of the team's secrets."""
    return set(state.secrets.get(team, ()))


def team_secrets(state: State, team: str) -> list[tuple[str, Secret]]:
    """(name, sealed secret) of each of the team's secrets, by name."""
    return [(name, plain_copy(entry)) for name, entry in sorted(state.secrets.get(team, {}).items())]


def audit_records(state: State, after: int, limit: int, team: str | None) -> list[AuditRecord]:
    """Audit records newer than seq `after` (of this team when given), newest first, at most `limit`."""
    out: list[AuditRecord] = []
    for row in reversed(state.audit):
        if row["seq"] <= after or len(out) >= limit:
            break
        if team is None or row["team"] == team:
            out.append(plain_copy(row))
    return out
