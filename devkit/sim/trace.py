"""What happened in a run, node by node, as readable lines.

Two sources: the simulator's own events (faults, process starts and deaths, webhook calls,
operators' actions) and, when tracing in full, every log line schedb's code writes (structlog,
routed here with the simulated node and time instead of a timestamp). Without a full trace
only the simulator's events are kept, the last TAIL of them, for the report of a failure.
Nothing random or host-dependent is printed (no correlation ids, no object addresses), so
the same seed gives the same trace byte for byte.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import structlog

from devkit.sim.world import World
from schedb.commands import AssignFires, Command

TAIL = 60
# Fields of schedb's log lines that differ from run to run, or say nothing here.
NOISY = frozenset({"correlation_id", "timestamp", "level", "logger", "exc_info"})


class Trace:
    def __init__(self, world: World, full: bool) -> None:
        self._world = world
        self.full = full
        self.lines: list[str] | deque[str] = [] if full else deque(maxlen=TAIL)
        self.errors: list[str] = []  # schedb's log lines at error level or above: a bug (checks.py fails the run)

    def event(self, node: str, what: str, **fields: Any) -> None:
        self.lines.append(self._line(node, what, fields))

    def _line(self, node: str, what: str, fields: dict[str, Any]) -> str:
        text = " ".join(f"{key}={_short(value)}" for key, value in fields.items() if value is not None)
        return f"{self._world.now:9.3f} {node:<3} {what}{' ' + text if text else ''}"

    def committed(self, index: int, command: Command, result: dict[str, Any]) -> None:
        """A command entered the committed log (the first node applied it)."""
        fields = {k: v for k, v in vars(command).items() if k not in ("now_ms", "actor") and v not in ([], "", {})}
        if isinstance(command, AssignFires) and not (command.items or command.reassign or command.release):
            return  # the leader's clock tick
        self.event("log", f"#{index} {type(command).__name__}", **fields, now_ms=command.now_ms,
                   result=result if "error" in result else None)

    def log_processor(self, _logger: object, method: str, event: dict[str, Any]) -> str:
        """structlog's last processor: schedb's log line becomes a trace line."""
        process = self._world.current
        node = process.node_id if process is not None else "sim"
        what = str(event.pop("event", "?"))
        line = self._line(node, what, {k: v for k, v in event.items() if k not in NOISY})
        self.lines.append(line)
        if method in ("error", "exception", "critical"):
            self.errors.append(line)
        return ""

    def install(self) -> None:
        """Route schedb's logs into the trace: all of them in full, else only errors (cheap)."""
        level = logging.DEBUG if self.full else logging.ERROR
        structlog.configure(processors=[self.log_processor], wrapper_class=structlog.make_filtering_bound_logger(level),
                            logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)  # dropped tasks of killed processes

    def text(self) -> str:
        return "\n".join(self.lines)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
