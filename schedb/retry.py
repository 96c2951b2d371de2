"""Retry timing: exponential backoff with a cap and deterministic jitter.

Pure: the state machine calls it while applying, so the jitter comes from a
hash of (fire id, attempt), never from a random generator, and every node
computes the same instant.
"""

from __future__ import annotations

import hashlib

JITTER_SPAN = 0.4  # the delay is scaled by a factor in [0.8, 1.2)


def jitter_factor(fire_id: str, attempt: int) -> float:
    digest = hashlib.blake2b(f"{fire_id}\x00{attempt}".encode(), digest_size=8).digest()
    return 1.0 - JITTER_SPAN / 2 + JITTER_SPAN * int.from_bytes(digest, "big") / 2**64


def backoff_ms(fire_id: str, failed_attempt: int, backoff_s: float, backoff_max_s: float,
               retry_after_ms: int = 0) -> int:
    """Delay before the attempt after `failed_attempt` (1-based).

    base · 2^(n-1) · jitter, at most backoff_max_s; a Retry-After asked by the
    receiver is honoured when longer, but never beyond the cap either.
    """
    cap_ms = backoff_max_s * 1000
    delay_ms = min(cap_ms, backoff_s * 1000 * 2 ** min(failed_attempt - 1, 62) * jitter_factor(fire_id, failed_attempt))
    if retry_after_ms > 0:
        delay_ms = max(delay_ms, min(retry_after_ms, cap_ms))
    return int(delay_ms)
