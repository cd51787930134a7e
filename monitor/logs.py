"""structlog set-up: readable lines on a terminal, JSON lines for journald and files.

Event names are namespaced (``fetch.retry``, ``cycle.done``) and carry key-value fields, so
operators can filter on them and tests can assert on them with ``capture_logs``.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from monitor.config import LoggingConfig


def configure(settings: LoggingConfig, stream: TextIO | None = None) -> None:
    """Route structlog to ``stream`` (stderr by default) in the configured format."""
    out = stream or sys.stderr
    as_json = settings.format == "json" or (settings.format == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
