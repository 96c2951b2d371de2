"""The composition root: one schedb node and its HTTP API from one config.

    config → Node (schedb.node: Replica, Dispatcher, Executor) → HTTP API (schedb.api.app)

`run_node` is what `schedb node --config FILE` calls; tests start it as a real
process the same way.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import ssl

import structlog
from aiohttp import web

from schedb import heap
from schedb.api.app import create_app
from schedb.clock import monotonic
from schedb.config import Config, ConfigError, parse_address
from schedb.eventloop import loop_factory
from schedb.fsm import queries
from schedb.logs import configure_logging
from schedb.node import Node

log = structlog.get_logger("schedb.node")  # a node's own lines, whichever module logs them
LISTEN_RETRY_S = 30.0


async def serve(config: Config) -> None:
    tls = tls_context(config)  # before anything starts: a bad cert must stop the node cleanly
    sock = await _listen(*parse_address("http.listen", config.http.listen))
    # pysyncobj forks a child to write each snapshot; it must not keep our port open,
    # or a node restarted right after a SIGKILL could not listen again.
    os.register_at_fork(after_in_child=sock.close)
    node = Node(config)
    await node.start()
    heap.tune()
    freezer = asyncio.create_task(heap.keep_long_lived_frozen(
        node.replica.caught_up, lambda: node.replica.read(queries.job_count)), name="heap")
    runner = web.AppRunner(create_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=tls).start()
    log.info("http_listening", listen=config.http.listen, tls=tls is not None)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("node_stopping")
    freezer.cancel()
    await runner.cleanup()
    await node.stop()
    log.info("node_stopped")


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The API's TLS context, or None for plain HTTP; raises ConfigError when the PEM files
    cannot be read or do not match, so `schedb node` reports it instead of a traceback."""
    http = config.http
    if not http.tls_cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(http.tls_cert_file, http.tls_key_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise ConfigError(f"http.tls_cert_file {http.tls_cert_file!r} / http.tls_key_file {http.tls_key_file!r}: "
                          f"cannot load the certificate and key: {exc}") from exc
    return context


async def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket; retried for a while when the port is still held (by the
    snapshot child of a node killed a moment ago, say)."""
    deadline = monotonic() + LISTEN_RETRY_S
    while True:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or monotonic() > deadline:
                raise
            log.warning("http_port_busy", host=host, port=port)
            await asyncio.sleep(0.5)
            continue
        sock.listen(1024)
        sock.setblocking(False)
        return sock


def run_node(config: Config) -> None:
    configure_logging(config.log.level, config.log.format, config.node.id)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(config))
