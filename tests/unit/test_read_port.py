"""The read port (issue 17): the node's parts read the state through named queries only, and
what a query returns shares nothing with the state (its caller uses it outside the lock)."""

from __future__ import annotations

import ast
import inspect
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from schedb import fire_queries
from schedb.fsm import feed_queries, job_list, queries
from schedb.fsm.core import State
from schedb.fsm.job_list import JobQuery
from tests.unit.test_model import _busy_state

SCHEDB = Path(__file__).parents[2] / "schedb"
QUERY_MODULES: tuple[ModuleType, ...] = (queries, job_list, feed_queries, fire_queries)
ADMIN = {"key": "", "team": "default", "role": "admin"}


def _read_calls() -> Iterator[tuple[str, ast.Call, dict[str, str]]]:
    """(where, call, {local name: the module it was imported from}) of every `….read(…)` call
    on a replica under schedb/."""
    for path in sorted(SCHEDB.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.asname or alias.name: f"{node.module}.{alias.name}"
                    for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
                    for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "read" \
                    and "replica" in ast.unparse(node.func.value):
                yield f"{path.relative_to(SCHEDB.parent)}:{node.lineno}", node, imported


def test_no_state_read_is_a_lambda() -> None:
    found = [f"{where}: .read(lambda" for where, call, _ in _read_calls()
             if call.args and isinstance(call.args[0], ast.Lambda)]
    assert found == []


def test_every_state_read_names_a_query_of_the_read_port() -> None:
    names = {module.__name__ for module in QUERY_MODULES}
    wrong = []
    for where, call, imported in _read_calls():
        query = call.args[0] if call.args else None
        if isinstance(query, ast.Attribute) and isinstance(query.value, ast.Name):
            origin = imported.get(query.value.id, "")
        elif isinstance(query, ast.Name):
            origin = imported.get(query.id, "").rpartition(".")[0]
        else:
            origin = ""
        if origin not in names:
            wrong.append(f"{where}: {ast.unparse(call)}")
    assert wrong == []
    assert len(list(_read_calls())) >= 30  # the check looks at the calls at all


def _queries() -> list[Any]:
    return [fn for module in QUERY_MODULES for name, fn in vars(module).items()
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_")
            and next(iter(inspect.signature(fn).parameters), "") == "state"]


@pytest.mark.parametrize("query", _queries(), ids=lambda fn: f"{fn.__module__}.{fn.__name__}")
def test_every_query_says_what_it_returns(query: Any) -> None:
    assert (query.__doc__ or "").strip(), f"{query.__name__} has no docstring"


def _containers(value: Any, seen: set[int]) -> Iterator[Any]:
    """Every mutable container reachable from value (objects' attributes included)."""
    if id(value) in seen or isinstance(value, str | bytes | int | float | bool | type(None)):
        return
    seen.add(id(value))
    if isinstance(value, dict | list | deque | set):
        yield value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple | deque | set) \
        else vars(value).values() if hasattr(value, "__dict__") else ()
    for item in items:
        yield from _containers(item, seen)


def _calls(state: State) -> list[tuple[Any, tuple[Any, ...]]]:
    job_id = next(iter(state.jobs))
    team = state.jobs[job_id]["team"]
    node_id, node = next(iter(state.nodes.items()))
    everything = JobQuery(1000, None, None, None, "", None, None, "id", "", None, True)
    fire = next(iter(state.book.fires.values()), None)
    return [
        (queries.node_addresses, ()), (queries.nodes, ()), (queries.node_record, (node_id,)),
        (queries.node_at, (node["raft_addr"],)), (queries.cluster_counts, ()), (queries.state_numbers, ()),
        (queries.config_defaults, ()), (queries.fire_changes, (node_id, -1)), (queries.job, (job_id,)),
        (queries.job_history, (job_id, ADMIN)), (queries.recent_executions, (ADMIN, None, None, 10_000)),
        (queries.registered_jobs, (ADMIN, None)), (queries.dead_letters, (ADMIN, None, 10_000)),
        (queries.run, (next(iter(state.runs)), ADMIN)), (queries.runs, (ADMIN, None, 10_000)),
        (queries.team_usage, (team, state.now_ms)), (queries.team_quotas, (team,)),
        (queries.quota_settings, (team,)), (queries.api_key, (next(iter(state.api_keys)),)),
        (queries.api_keys, (None,)), (queries.team_secrets, (next(iter(state.secrets)),)),
        (queries.audit_records, (0, 10_000, None)), (job_list.job_page, (everything, ADMIN, state.now_ms)),
        (feed_queries.feed_baseline, ()), (feed_queries.feed_changes, ([tuple(state.jobs)], {}, 0, 10**9)),
        *([(fire_queries.decide_fire, (fire, fire["node"]))] if fire is not None else []),
    ]


def _below_job_copy_depth(state: State) -> set[int]:
    """Containers deeper in a job than queries.JOB_COPY_DEPTH (a webhook's body and headers, a
    parameters schema): shared by rule, for apply replaces a spec, never changes one."""
    out: set[int] = set()

    def walk(value: Any, level: int) -> None:
        if isinstance(value, dict | list | tuple):
            if level > queries.JOB_COPY_DEPTH:
                out.update(id(c) for c in _containers(value, set()))
                return
            for item in value.values() if isinstance(value, dict) else value:
                walk(item, level + 1)

    for job in state.jobs.values():
        walk(job, 1)
    return out


def test_what_a_query_returns_shares_nothing_with_the_state() -> None:
    """Nothing but what apply never changes in place (a job's parts below JOB_COPY_DEPTH)."""
    state = _busy_state()
    inside = {id(c) for c in _containers(state, set())} - _below_job_copy_depth(state)
    specs = {id(c) for job in state.jobs.values() for c in _containers(job["spec"], set())}
    for query, args in _calls(state):
        answer = query(state, *args)
        # A delivery reads the job's spec itself, as it always did (apply replaces a spec).
        live = inside - specs if query is fire_queries.decide_fire else inside
        shared = [c for c in _containers(answer, set()) if id(c) in live]
        assert not shared, f"{query.__name__} returns a live part of the state: {shared[0]!r:.200}"
