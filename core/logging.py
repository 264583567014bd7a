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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    for noisy in ("httpx", "httpcore", "engineio", "socketio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True
