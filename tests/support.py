"""Helpers the suite shares: free ports, waiting, real servers started for a test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from core.settings import Settings
from webapp.app import create_app

ROOT = Path(__file__).resolve().parent.parent
RASA_BIN = ROOT / ".venv-rasa" / "bin" / "rasa"
RASA_MODELS = ROOT / "var" / "rasa" / "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def rasa_model_loaded(base_url: str) -> bool:
    try:
        response = httpx.get(f"{base_url}/status", timeout=2)
        return response.status_code == 200 and bool(response.json().get("model_file"))
    except (httpx.HTTPError, ValueError):
        return False


class RasaStack:
    """The real Rasa server and action server, in their own Python 3.10 environment."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rasa_port = free_port()
        self.action_port = free_port()
        self.tracker_db = workdir / "tracker.db"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def rasa_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def action_url(self) -> str:
        return f"http://127.0.0.1:{self.action_port}"

    def _spawn(self, name: str, args: list[str]) -> None:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "ACTION_SERVER_URL": f"{self.action_url}/webhook",
            "RASA_TRACKER_DB": str(self.tracker_db),
            "RASA_TELEMETRY_ENABLED": "false",
        }
        log = (self.workdir / f"{name}.log").open("ab")
        self._processes[name] = subprocess.Popen(
            [str(RASA_BIN), *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def start_actions(self) -> None:
        self._spawn(
            "actions", ["run", "actions", "--actions", "bot.actions", "-p", str(self.action_port)]
        )
        wait_until(lambda: http_ok(f"{self.action_url}/health"), timeout=120, what="action server")

    def start_rasa(self) -> None:
        self._spawn(
            "rasa",
            [
                "run",
                "--enable-api",
                "-i",
                "127.0.0.1",
                "-p",
                str(self.rasa_port),
                "-m",
                str(RASA_MODELS),
                "--endpoints",
                "bot/endpoints.yml",
                "--credentials",
                "bot/credentials.yml",
            ],
        )
        wait_until(lambda: rasa_model_loaded(self.rasa_url), timeout=240, what="Rasa server")
        # The first messages after loading build the model's graphs (seconds on a busy machine,
        # beyond the platform's 4 s budget): send some here so tests meet the warm server.
        # The triage form's first turn (form, slot validation in the action server) costs most.
        for text in ("hello", "I have had a headache since yesterday", "what are your hours"):
            httpx.post(
                f"{self.rasa_url}/webhooks/rest/webhook",
                json={"sender": "warm-up", "message": text},
                timeout=120,
            )

    def stop(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in list(self._processes):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, port: int | None = None
) -> AsyncIterator[tuple[str, Any]]:
    """The real ASGI app behind a real uvicorn server on a free port: (base URL, app)."""
    app = create_app(settings)
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def celery_worker(
    settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on the settings' database, broker and data folder."""
    env = {
        **(extra_env or {}),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "HF_HUB_OFFLINE": "1",
        "DATABASE_URL": settings.database_url,
        "CELERY_BROKER_URL": settings.celery_broker_url,
        "DATA_DIR": str(settings.data_dir),
        # The same keys as this process: the worker reads what the app encrypted.
        **{
            name.upper(): secret.get_secret_value()
            for name in ("encryption_keys", "blind_index_key")
            if (secret := getattr(settings, name)) is not None
        },
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "core.tasks", "worker", "--pool", "solo",
             "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield worker
        finally:
            worker.terminate()
            worker.wait(timeout=30)
