"""Conversions between Unix milliseconds and RFC 3339 text (UTC, millisecond precision)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=4096)  # every webhook's headers carry one; fires of a slot share their instant
def ms_to_rfc3339(ms: int) -> str:
    """2026-12-01T10:00:00.000Z for 1796119200000."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def rfc3339_to_ms(text: str) -> int:
    """Parse an RFC 3339 timestamp with an explicit offset (Z or ±hh:mm) into Unix ms."""
    dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if dt.tzinfo is None:
        raise ValueError("timestamp needs an offset (Z or +hh:mm)")
    return round(dt.timestamp() * 1000)
