"""Structured logging: JSON lines when not on a terminal, console rendering on one."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", fmt: str = "auto", node_id: str = "") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    def add_node(_logger: object, _method: str, event: dict) -> dict:
        if node_id:
            event.setdefault("node", node_id)
        return event

    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_node,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # pysyncobj logs through the standard library; keep its warnings, drop its chatter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format='{"logger": "%(name)s", "level": "%(levelname)s", "event": %(message)r}')
