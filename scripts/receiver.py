"""A webhook receiver that records every delivery, one JSON line each, to a ledger file.

    python scripts/receiver.py --port 9999 --ledger deliveries.jsonl

Each line: fire_id, job_id, attempt, node, scheduled_at, arrival_ms (receiver's
clock, Unix ms), correlation_id, method, path. `--fail-rate` answers a share of
requests with 500 (for retry and DLQ experiments).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import IO

from aiohttp import web


def make_app(ledger: IO[str], fail_rate: float) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        entry = {
            "arrival_ms": int(time.time() * 1000),
            "fire_id": request.headers.get("X-Schedb-Fire-Id"),
            "job_id": request.headers.get("X-Schedb-Job-Id"),
            "attempt": int(request.headers.get("X-Schedb-Attempt", "0")),
            "node": request.headers.get("X-Schedb-Node"),
            "scheduled_at": request.headers.get("X-Schedb-Scheduled-At"),
            "idempotency_key": request.headers.get("Idempotency-Key"),
            "correlation_id": request.headers.get("X-Correlation-ID"),
            "method": request.method,
            "path": request.path,
        }
        ledger.write(json.dumps(entry) + "\n")
        ledger.flush()
        if fail_rate and random.random() < fail_rate:
            return web.json_response({"ok": False}, status=500)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--ledger", default="deliveries.jsonl")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    args = parser.parse_args()
    with open(args.ledger, "a", encoding="utf-8") as ledger:
        web.run_app(make_app(ledger, args.fail_rate), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
