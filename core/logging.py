"""Structured JSON logs. Log lines carry ids (conversation, message), never patient text."""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

_configured = False


def configure_logging() -> None:
    global _configured
    if _configured:
        return
    root = logging.getLogger()
    # Leave logging alone where the host already set it up (a test runner, a log config).
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    # These log statement parameters or payloads (patient words) at DEBUG: never below WARNING,
    # whatever LOG_LEVEL says.
    for leaky in (
        "aiosqlite",
        "sqlalchemy.engine",
        "psycopg",
        "httpx",
        "httpcore",
        "engineio",
        "socketio",
        "websockets",
        "celery.worker.strategy",
    ):
        logging.getLogger(leaky).setLevel(logging.WARNING)
    _configured = True
