"""Fires waiting for their instant, grouped by due time: one loop timer per distinct
instant, not one per fire. Schedules bunch up (every `@every 1s` job is due at the same
millisecond), so a thousand fires due together cost one timer, and cancelling one of
them is a dict removal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from schedb.clock import wall_ms

log = structlog.get_logger("schedb.timers")
FireKey = tuple[str, int]  # (fire_id, attempt)
Fire = dict[str, Any]


class DueTimers:
    def __init__(self, on_due: Callable[[FireKey, Fire], None]) -> None:
        self._on_due = on_due
        self._fires: dict[FireKey, Fire] = {}
        self._keys: dict[str, FireKey] = {}  # fire id → its waiting attempt
        self._instants: dict[int, dict[FireKey, None]] = {}
        self._handles: dict[int, asyncio.TimerHandle] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._fires

    def __iter__(self) -> Iterator[FireKey]:
        return iter(list(self._fires))

    def __len__(self) -> int:
        return len(self._fires)

    def key_of(self, fire_id: str) -> FireKey | None:
        return self._keys.get(fire_id)

    def add(self, key: FireKey, fire: Fire) -> None:
        self.cancel(self._keys.get(key[0], key))  # another attempt of the same fire waits no more
        due_ms = fire["due_ms"]
        self._fires[key] = fire
        self._keys[key[0]] = key
        self._instants.setdefault(due_ms, {})[key] = None
        if due_ms not in self._handles:
            self._arm(due_ms)

    def cancel(self, key: FireKey) -> None:
        fire = self._fires.pop(key, None)
        if fire is None:
            return
        del self._keys[key[0]]
        waiting = self._instants[fire["due_ms"]]
        del waiting[key]
        if not waiting:
            del self._instants[fire["due_ms"]]
            self._handles.pop(fire["due_ms"]).cancel()

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._fires.clear()
        self._keys.clear()
        self._instants.clear()
        self._handles.clear()

    def _arm(self, due_ms: int) -> None:
        delay_s = max(0.0, (due_ms - wall_ms()) / 1000)
        self._handles[due_ms] = asyncio.get_running_loop().call_later(delay_s, self._fire, due_ms)

    def _fire(self, due_ms: int) -> None:
        if due_ms > wall_ms():  # the loop's clock and the wall clock drift apart a little: never early
            self._arm(due_ms)
            return
        del self._handles[due_ms]
        for key in self._instants.pop(due_ms):
            del self._keys[key[0]]
            fire = self._fires.pop(key)
            try:
                self._on_due(key, fire)
            except Exception:  # one fire's bug must not strand the others due at this instant
                log.exception("due_callback_failed", fire_id=key[0], attempt=key[1])
