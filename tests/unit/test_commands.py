from __future__ import annotations

import msgpack
import pytest

from schedb.commands import (
    FORMAT_VERSION,
    AssignFires,
    CompleteFires,
    CreateJob,
    Outcome,
    UndecodableCommand,
    decode,
    encode,
)


def test_round_trip_keeps_type_and_fields() -> None:
    for command in (CreateJob(5, {"id": "x"}), AssignFires(6, [["x", 1000, "node2"]]),
                    CompleteFires(7, "node2", [Outcome("x:1000", 1, "failed", 500, 1, 2, "HTTP 500").to_list()])):
        assert decode(encode(command)) == command


@pytest.mark.parametrize("data", [
    b"", b"\xc1", msgpack.packb([FORMAT_VERSION + 1, 2, {}]), msgpack.packb([FORMAT_VERSION, 99, {}]),
    msgpack.packb([FORMAT_VERSION, 2, {"now_ms": 1}]), msgpack.packb([FORMAT_VERSION, 2, {"now_ms": 1, "spec": {},
                                                                                          "extra": 1}]),
    msgpack.packb("just a string"),
])
def test_undecodable_entries_raise(data: bytes) -> None:
    with pytest.raises(UndecodableCommand):
        decode(data)
