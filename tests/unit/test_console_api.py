"""The pure parts of the console's API support: which origins are the cluster's (cors.py) and
the next-fire cursor of the job list (joblist.py). The integration tests cover the rest."""

from __future__ import annotations

import pytest

from schedb.api.cors import allowed
from schedb.api.joblist import decode_cursor, encode_cursor
from schedb.api.problems import Problem
from schedb.origins import parse_member, parse_origin

MEMBERS = frozenset({("127.0.0.1", 8001), ("10.0.0.5", 8002), ("0.0.0.0", 8003), ("::", 8004)})


@pytest.mark.parametrize(("origin", "ok"), [
    ("http://127.0.0.1:8001", True),
    ("https://localhost:8001", True),  # loopback names are one host
    ("http://[::1]:8001", True),
    ("http://LOCALHOST:8001", True),
    ("http://10.0.0.5:8002", True),
    ("http://127.0.0.1:8003", True),  # a wildcard listener: its loopback names only
    ("http://localhost:8004", True),
    ("http://node3.example:8003", False),  # any other name: a page on that host could read the API
    ("http://[2001:db8::1]:8004", False),
    ("http://127.0.0.1:8002", False),  # 10.0.0.5 is not a loopback name
    ("http://10.0.0.5:8001", False),
    ("http://127.0.0.1", False),  # port 80
    ("http://evil.example:8001", False),
    ("null", False),
    ("file://", False),
    ("http://127.0.0.1:8001/", False),
    ("http://a@127.0.0.1:8001", False),
    ("http://127.0.0.1:80801", False),
    ("http://127.0.0.1:8001\u00e9", False),
    ("http://" + "a" * 400 + ":8003", False),
])
def test_origins_of_members(origin: str, ok: bool) -> None:
    address = parse_origin(origin)
    assert (address is not None and allowed(address, MEMBERS)) is ok


@pytest.mark.parametrize(("addr", "parsed"), [
    ("127.0.0.1:8001", ("127.0.0.1", 8001)), ("[::1]:8001", ("::1", 8001)), (":::8001", ("::", 8001)),
    ("Node1.Example:80", ("node1.example", 80)), ("127.0.0.1", None), ("host:http", None), ("h:123456", None),
])
def test_member_addresses(addr: str, parsed: tuple[str, int] | None) -> None:
    assert parse_member(addr) == parsed


@pytest.mark.parametrize("key", [(0, 1_700_000_000_000, "job-1"), (1, 0, "svc.a"), (0, -5, "x")])
def test_cursor_round_trip(key: tuple[int, int, str]) -> None:
    text = encode_cursor(key)
    assert text.startswith("nf1.") and decode_cursor(text) == key


@pytest.mark.parametrize("text", ["", "job-1", "nf1.", "nf1.@@", "nf2." + encode_cursor((0, 1, "a"))[4:],
                                  encode_cursor((0, 1, "a")) + "x" * 300])
def test_bad_cursor_names_after(text: str) -> None:
    with pytest.raises(Problem) as raised:
        decode_cursor(text)
    assert raised.value.status == 400 and raised.value.errors is not None
    assert raised.value.errors[0]["field"] == "after"
