"""Cross-origin requests (CORS) between the cluster's own nodes.

The console is served by every node, and when its node dies it carries on through another
one: a page loaded from http://127.0.0.1:8001/ui then calls http://127.0.0.1:8002/api/v1/...,
another origin to the browser. Only the cluster's members are such origins: `http://` or
`https://` and the `http_addr` of a node in the replicated state (or this node's own
`http.listen`), plus what `http.cors_origins` lists. The loopback names (127.0.0.1, localhost,
[::1]) are one host. A member listening on a wildcard address (0.0.0.0, ::) is reachable under
names the cluster cannot know: only the loopback names count for it, never "any host with its
port" (a web page on attacker.example:8003 would then read the API); the operator lists the
names in `http.cors_origins`. Anything else gets no CORS headers: the browser keeps the answer
from the page. No cookies are involved (keys travel in headers), so no credentials mode.

A browser sends some cross-origin requests without asking first: "simple" ones (a form post, or a
fetch with no body or a text/plain one), which change state before CORS keeps the answer from the
page. With auth off nothing else would stop a web page from pausing or deleting jobs of a cluster on
localhost, so `require_json_or_client_header` refuses a state-changing API call (415) unless its
Content-Type is JSON or it carries a header no simple request can (X-Schedb-Client, X-Requested-With,
or a key). Either one makes the browser ask first, and only the cluster's own origins pass.

The middleware (outermost) answers preflights before routing and auth: a preflight carries no
key, and aiohttp would answer an OPTIONS it has no route for with a 405. The headers of actual
answers are added when the answer is prepared (`add_headers` on `on_response_prepare`), which
covers problem answers made by inner middlewares and streams whose headers leave before the
handler returns (Server-Sent Events).
"""

from __future__ import annotations

from aiohttp import web

from schedb.api.problems import Handler, Problem, problem_response
from schedb.clock import monotonic
from schedb.fsm import queries
from schedb.node import Node
from schedb.origins import Address, parse_member, parse_origin

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = ("Authorization, X-API-Key, Content-Type, If-Match, Idempotency-Key, X-Correlation-ID, "
                 "Last-Event-ID, X-Schedb-Client, X-Requested-With")
EXPOSE_HEADERS = "ETag, Location, Retry-After, X-Correlation-ID"
MAX_AGE_S = 600
MEMBERS_TTL_S = 1.0  # a new member's origin is allowed within a second of its registration applying
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD = frozenset({"0.0.0.0", "::", ""})
ALLOWED_ORIGIN = web.RequestKey("schedb.cors_origin", str)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})
# Headers outside the CORS safelist: a page can send them to another origin only after a preflight.
# X-Schedb-Forwarded: a node passing a membership change on to the leader (membership.py).
CLIENT_HEADERS = ("X-Schedb-Client", "X-Requested-With", "Authorization", "X-API-Key", "X-Schedb-Forwarded")


def allowed(origin: Address, members: frozenset[Address]) -> bool:
    host, port = origin
    return any(port == member_port and (member_host == host or (member_host in LOOPBACK | WILDCARD
                                                                and host in LOOPBACK))
               for member_host, member_port in members)


class Origins:
    """Which origins are the cluster's; the member addresses come from one state read a second."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._members: frozenset[Address] = frozenset()
        self._read_at = -MEMBERS_TTL_S

    def allows(self, origin: str) -> bool:
        address = parse_origin(origin)
        return address is not None and allowed(address, self._current())

    def _current(self) -> frozenset[Address]:
        now = monotonic()
        if now - self._read_at >= MEMBERS_TTL_S:
            addrs = [http for _, http in self._node.replica.read(queries.node_addresses).values()]
            http = self._node.config.http
            parsed = [*(parse_member(a) for a in (http.listen, *addrs)), *map(parse_origin, http.cors_origins)]
            self._members = frozenset(a for a in parsed if a is not None)
            self._read_at = now
        return self._members


def middleware(node: Node) -> web.middleware:  # type: ignore[valid-type]
    origins = Origins(node)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ok = origin is not None and origins.allows(origin)
        if request.method == "OPTIONS" and origin is not None and "Access-Control-Request-Method" in request.headers:
            return _preflight(origin) if ok else problem_response(Problem(
                403, "Origin not allowed", "cross-origin requests come only from the consoles of this cluster's "
                "nodes", kind="cors-origin-forbidden", errors=[{"field": "Origin", "message": "not a member"}]))
        if ok:
            assert origin is not None
            request[ALLOWED_ORIGIN] = origin  # add_headers puts it on the answer, whatever makes it
        return await handler(request)

    return cors


def _preflight(origin: str) -> web.Response:
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": str(MAX_AGE_S), "Vary": "Origin"})


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of an answer to an allowed origin."""
    origin = request.get(ALLOWED_ORIGIN)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    vary = response.headers.get("Vary", "")
    if "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def _shows_a_client(request: web.Request) -> bool:
    return request.content_type.lower() in JSON_TYPES or any(h in request.headers for h in CLIENT_HEADERS)


@web.middleware
async def require_json_or_client_header(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No state-changing API call a web page could send without a preflight (see the module docstring)."""
    if request.method in STATE_CHANGING and request.path.startswith("/api/") and not _shows_a_client(request):
        raise Problem(415, "Unsupported media type", "a state-changing call needs Content-Type: application/json "
                      "or an X-Schedb-Client header (a web page cannot send either to another origin unasked)",
                      kind="unsupported-media-type",
                      errors=[{"field": "Content-Type", "message": "application/json, or send X-Schedb-Client"}])
    return await handler(request)
