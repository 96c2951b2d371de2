"""Imports point down: every module under schedb/ sits in one layer of LAYERS, and imports only
modules of its own layer or of layers listed before it. Every import counts, wherever it is:
at the top, inside a function, under `if TYPE_CHECKING:`, or through importlib.

The state machine (schedb.fsm) has two more rules: out of the package it imports only the pure
helpers of FSM_MAY_IMPORT (what apply needs: no config, no clock, no I/O), and its modules
import one another without a cycle. An import of a schedb module that is not a file of this
tree (an old path such as schedb.state) is refused too. `make lint` runs this file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SCHEDB = Path(__file__).parents[2] / "schedb"
FSM = "schedb.fsm"

# Ordered bottom-up; a name ending in ".*" is every module under that package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pure helpers", ("schedb", "schedb.timefmt", "schedb.schedule", "schedb.jobspec", "schedb.commands",
                      "schedb.report", "schedb.retry")),
    ("fsm leaves", ("schedb.fsm", "schedb.fsm.model", "schedb.fsm.fires", "schedb.fsm.slots", "schedb.fsm.limits",
                    "schedb.fsm.misfire", "schedb.fsm.replicated_time")),
    ("fsm core", ("schedb.fsm.core",)),
    ("fsm services", ("schedb.fsm.history", "schedb.fsm.tenancy", "schedb.fsm.nodes", "schedb.fsm.settings")),
    ("fsm workflow", ("schedb.fsm.workflow",)),
    ("fsm fire handlers", ("schedb.fsm.dead_letters", "schedb.fsm.occurrences", "schedb.fsm.assign",
                           "schedb.fsm.complete")),
    ("fsm job handlers", ("schedb.fsm.jobs", "schedb.fsm.registry")),
    ("fsm machine", ("schedb.fsm.upgrade", "schedb.fsm.machine")),
    ("fsm checks", ("schedb.fsm.invariants", "schedb.fsm.snapshot_compat")),
    ("fsm reads", ("schedb.fsm.queries", "schedb.fsm.job_list", "schedb.fsm.feed_queries")),
    ("node support", ("schedb.clock", "schedb.origins", "schedb.config", "schedb.logs", "schedb.metrics",
                      "schedb.peers", "schedb.egress", "schedb.secretbox", "schedb.describe", "schedb.gate",
                      "schedb.teamgates", "schedb.admission", "schedb.heap", "schedb.scaling",
                      "schedb.eventloop")),
    ("replication", ("schedb.fence", "schedb.applier", "schedb.raft_node", "schedb.raft")),
    ("reads", ("schedb.policies", "schedb.delivery_view", "schedb.fire_queries")),
    ("runtime", ("schedb.clockwatch", "schedb.webhook", "schedb.breaker", "schedb.worker", "schedb.worker_process",
                 "schedb.worker_pool",
                 "schedb.timers", "schedb.local_fires", "schedb.dispatcher", "schedb.outcome_flusher",
                 "schedb.executor")),
    ("node", ("schedb.node",)),
    ("api", ("schedb.api", "schedb.api.*")),
    ("entry", ("schedb.serve", "schedb.cli_client", "schedb.cli_teams", "schedb.cli", "schedb.__main__")),
)
FSM_MAY_IMPORT = frozenset({"schedb.commands", "schedb.schedule", "schedb.jobspec", "schedb.report", "schedb.retry"})

Sources = dict[str, tuple[str, bool]]  # module name -> (source, is a package's __init__)


def tree_sources(root: Path = SCHEDB) -> Sources:
    out: Sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path.read_text(encoding="utf-8"), package)
    return out


def layer_of(module: str) -> int | None:
    for rank, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".*") and module.startswith(member[:-1])):
                return rank
    return None


def imports_of(module: str, source: str, package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, module imported) for every schedb import anywhere in the source."""
    base = module if package else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = node.module or ""
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                parent = f"{anchor}.{parent}" if parent else anchor
            for alias in node.names:
                out.append((node.lineno, f"{parent}.{alias.name}" if f"{parent}.{alias.name}" in known else parent))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            out.append((node.lineno, node.args[0].value))  # type: ignore[attr-defined]
    return [(line, target) for line, target in out if target == "schedb" or target.startswith("schedb.")]


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__") and bool(node.args) and \
        isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)


def problems(sources: Sources) -> list[str]:
    known = set(sources)
    out = [f"{module}: in no layer of LAYERS" for module in sorted(known) if layer_of(module) is None]
    graph: dict[str, set[str]] = {}
    for module, (source, package) in sorted(sources.items()):
        rank = layer_of(module)
        for line, target in imports_of(module, source, package, known):
            where = f"{module}:{line} imports {target}"
            if target not in known:
                out.append(f"{where}, which is not a module of this tree")
            elif rank is not None and (target_rank := layer_of(target)) is not None and target_rank > rank:
                out.append(f"{where}, an upward import ({LAYERS[rank][0]} < {LAYERS[target_rank][0]})")
            elif _in_fsm(module) and not _in_fsm(target) and target not in FSM_MAY_IMPORT:
                out.append(f"{where}: the state machine imports only {', '.join(sorted(FSM_MAY_IMPORT))}")
            if _in_fsm(module) and _in_fsm(target) and target != FSM:
                graph.setdefault(module, set()).add(target)
    return out + [f"import cycle in the state machine: {' -> '.join(cycle)}" for cycle in _cycles(graph)]


def _in_fsm(module: str) -> bool:
    return module == FSM or module.startswith(FSM + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that is on one (depth-first, deterministic)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            found.append([*path[path.index(module):], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return found


def test_every_import_in_schedb_points_down() -> None:
    assert problems(tree_sources()) == []


def test_every_module_of_the_layers_exists() -> None:
    sources = tree_sources()
    listed = {m for _, members in LAYERS for m in members if not m.endswith(".*")}
    assert listed <= set(sources), sorted(listed - set(sources))


# -- the check itself fails where it should ---------------------------------------------------

CORE = "schedb.fsm.core"


def _with(module: str, source: str, **more: str) -> list[str]:
    """The problems of this tree with a module's source replaced (more: module=source, dots as __)."""
    sources = tree_sources()
    sources[module] = (source, False)
    for name, other in more.items():
        sources[name.replace("__", ".")] = (other, False)
    return problems(sources)


@pytest.mark.parametrize("source", [
    "from schedb.fsm.machine import StateMachine\n",
    "def f():\n    from schedb.fsm import machine\n    return machine\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from schedb.fsm.jobs import create_job\n",
    "import schedb.raft\n",
    "from . import workflow\n",
    "import importlib\nworkflow = importlib.import_module('schedb.fsm.workflow')\n",
])
def test_an_upward_import_fails_wherever_it_is(source: str) -> None:
    upward, *cycles = _with(CORE, source)  # the modules above import core: each is a cycle too
    assert upward.startswith(CORE) and "an upward import" in upward, upward
    assert all(p.startswith("import cycle in the state machine") for p in cycles), cycles


def test_the_state_machine_may_not_import_the_node_config() -> None:
    found = _with("schedb.fsm.tenancy", "from schedb.config import QuotasSection\n")
    assert len(found) == 1 and "upward" in found[0]  # config is a layer above
    found = _with("schedb.fsm.jobs", "from schedb.timefmt import ms_to_rfc3339\n")  # below, but not listed
    assert len(found) == 1 and "the state machine imports only" in found[0]


def test_an_old_module_path_and_an_unlisted_module_fail() -> None:
    assert any("schedb.state, which is not a module" in p for p in _with("schedb.api.runs", "import schedb.state\n"))
    assert _with("schedb.newthing", "") == ["schedb.newthing: in no layer of LAYERS"]


def test_a_cycle_inside_the_state_machine_fails() -> None:
    found = _with("schedb.fsm.assign", "from schedb.fsm import complete\n",
                  schedb__fsm__complete="from schedb.fsm import assign\n")  # one layer: not upward, still a cycle
    assert found == ["import cycle in the state machine: schedb.fsm.assign -> schedb.fsm.complete -> "
                     "schedb.fsm.assign"], found
