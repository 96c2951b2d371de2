"""Old snapshots: the class paths a State pickled before schedb.fsm names.

pysyncobj writes a snapshot by pickling the StateHolder's attributes (schedb.raft), so a
snapshot names the classes of the objects in the State by module path. Before schedb.fsm
those were schedb.state.State, schedb.fires.FireBook, schedb.slots.SlotIndex and
schedb.limits.StateLimits. pysyncobj unpickles with the standard pickle module, whose
lookup we cannot hook, so `register()` puts a stand-in module under each old name in
sys.modules, holding only the class that moved. It is called once before pysyncobj may
load a snapshot (schedb.applier.StateHolder), and by tests that load one. Nothing imports
these names (tests/unit/test_layering.py refuses an import of a module that does not
exist as a file); a pickled State then loads through StateMachine.__setstate__
(schedb.fsm.upgrade). Drop an entry only when no snapshot of a version before 2 can remain.
"""

from __future__ import annotations

import sys
import types

from schedb.fsm.fires import FireBook
from schedb.fsm.limits import StateLimits
from schedb.fsm.machine import StateMachine
from schedb.fsm.slots import SlotIndex

# (module, class) in a snapshot of version 1 -> the class now
OLD_CLASS_PATHS: dict[tuple[str, str], type] = {
    ("schedb.state", "State"): StateMachine,
    ("schedb.fires", "FireBook"): FireBook,
    ("schedb.slots", "SlotIndex"): SlotIndex,
    ("schedb.limits", "StateLimits"): StateLimits,
}


def register() -> None:
    """Make every old class path resolve to the class that moved (idempotent)."""
    for (module_name, class_name), cls in OLD_CLASS_PATHS.items():
        module = sys.modules.get(module_name)
        if getattr(module, "__doc__", None) != _STAND_IN:
            module = sys.modules[module_name] = types.ModuleType(module_name, _STAND_IN)
        setattr(module, class_name, cls)


_STAND_IN = "An unpickling stand-in for a module before schedb.fsm (schedb.fsm.snapshot_compat)"
