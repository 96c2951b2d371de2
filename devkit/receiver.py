"""A webhook receiver that records every delivery, one JSON line each, to a ledger file.

    .venv/bin/python devkit/receiver.py --port 9999 --ledger deliveries.jsonl

(or `python -m devkit.receiver` from the repository root; it needs only aiohttp and the
standard library). devkit.harness.Receiver starts it by this file's path.

Each line: fire_id, job_id, attempt, node, scheduled_at, arrival_ms (receiver's
clock, Unix ms), correlation_id, method, path. `--fail-rate` answers a share of
requests with 500 (for retry and DLQ experiments); `--hang-rate` makes a share
of requests wait `--hang-s` seconds before answering.

A job can also pick the receiver's behaviour through its webhook URL's query:
- `?fail_attempts=2`: answer 500 to attempts 1 and 2, then 200;
- `?fail=always`: always answer 500;
- `?hang=10`: wait 10 s before answering;
- `?status=429&retry_after=3`: answer that status with that Retry-After;
- `?redirect=URL`: answer 302 to that URL (schedb must not follow it);
- `?report=<url-encoded JSON>`: answer that text as the JSON body (a run report such as
  `{"items_processed": 10, "message": "ok"}`, sent verbatim), with whatever status the rest picks.

Each line also keeps the request's query string and Authorization header, so a
test can see a secret arrive resolved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Mapping
from typing import IO

from aiohttp import web


def _reply(query: Mapping[str, str], ok: bool, status: int = 200, headers: dict[str, str] | None = None,
           ) -> web.Response:
    """{"ok": …}, or the query's `report` verbatim (a malformed one too, to test schedb with it)."""
    if "report" in query:
        return web.Response(text=query["report"], status=status, headers=headers, content_type="application/json")
    return web.json_response({"ok": ok}, status=status, headers=headers)


async def answer(request: web.Request, attempt: int, chaos: argparse.Namespace) -> web.Response:
    query = request.query
    if "hang" in query:
        await asyncio.sleep(float(query["hang"]))
    elif chaos.hang_rate and random.random() < chaos.hang_rate:
        await asyncio.sleep(chaos.hang_s)
    if "redirect" in query:
        return web.Response(status=302, headers={"Location": query["redirect"]})
    if "status" in query:
        headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
        return _reply(query, False, int(query["status"]), headers)
    failing = query.get("fail") == "always" or attempt <= int(query.get("fail_attempts", "-1"))
    if failing or (chaos.fail_rate and random.random() < chaos.fail_rate):
        return _reply(query, False, 500)
    return _reply(query, True)


def make_app(ledger: IO[str], chaos: argparse.Namespace) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        entry = {
            "arrival_ms": int(time.time() * 1000),
            "fire_id": request.headers.get("X-Schedb-Fire-Id"),
            "job_id": request.headers.get("X-Schedb-Job-Id"),
            "attempt": int(request.headers.get("X-Schedb-Attempt", "0")),
            "node": request.headers.get("X-Schedb-Node"),
            "scheduled_at": request.headers.get("X-Schedb-Scheduled-At"),
            "idempotency_key": request.headers.get("Idempotency-Key"),
            "correlation_id": request.headers.get("X-Correlation-ID"),
            "signature": request.headers.get("X-Schedb-Signature"),
            "body": body.decode(errors="replace")[:2000],
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "authorization": request.headers.get("Authorization"),
            "run_id": request.headers.get("X-Schedb-Run-Id"),
        }
        ledger.write(json.dumps(entry) + "\n")
        ledger.flush()
        return await answer(request, entry["attempt"], chaos)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--ledger", default="deliveries.jsonl")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 500")
    parser.add_argument("--hang-rate", type=float, default=0.0, help="share of requests that hang")
    parser.add_argument("--hang-s", type=float, default=60.0, help="how long a hanging request waits")
    args = parser.parse_args()
    with open(args.ledger, "a", encoding="utf-8") as ledger:
        web.run_app(make_app(ledger, args), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
