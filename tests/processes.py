"""Real processes a reliability test starts, kills (SIGKILL) and restarts: web app workers under
uvicorn, a Celery worker, and a private redis-server and PostgreSQL cluster on free ports in
temporary folders, so restarting them never touches the machine's shared services."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis
from pydantic import SecretStr

from core.settings import Settings
from tests.support import ROOT, free_port, http_ok, wait_until

POSTGRES_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build these same settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        env[name.upper()] = text
    return env


def _base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


class Service:
    """One child process with its log; `kill()` is kill -9, `start()` starts it again."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str],
        log_path: Path,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 90,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.args = args
        self.env = env
        self.log_path = log_path
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
            )
        if self.ready is not None:
            ready = self.ready

            def up() -> bool:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
                return ready()

            wait_until(up, timeout=self.ready_timeout, what=self.name)

    def kill(self) -> None:
        """kill -9: no shutdown handlers, no flushing, no acknowledgements."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.alive:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def web_process(settings: Settings, log_dir: Path, *, port: int | None = None) -> Service:
    """The web app as production runs it (`uvicorn webapp.main:app`), configured through its
    environment."""
    port = port or free_port()
    service = Service(
        f"web-{port}",
        [sys.executable, "-m", "uvicorn", "webapp.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env={**_base_env(), **settings_env(settings)},
        log_path=log_dir / f"web-{port}.log",
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
        ready_timeout=120,
    )  # fmt: skip
    service.port = port  # type: ignore[attr-defined]
    return service


def web_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.port}"  # type: ignore[attr-defined]


def worker_process(settings: Settings, log_path: Path) -> Service:
    """A Celery worker (one process, `--pool solo`) on the settings' database and broker."""
    return Service(
        "celery-worker",
        [sys.executable, "-m", "celery", "-A", "core.tasks", "worker", "--pool", "solo",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env={**_base_env(), **settings_env(settings)},
        log_path=log_path,
        ready=lambda: "ready." in log_path.read_text(errors="replace"),
        ready_timeout=120,
    )  # fmt: skip


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root; as root the cluster belongs to `postgres`."""
    return "postgres" if os.geteuid() == 0 else None


class RedisServer(Service):
    """A private redis-server with an append-only file, as a production Redis keeps the queue
    across a restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            f"redis-{self.port}",
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(workdir), "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--protected-mode", "no"],
            env=_base_env(),
            log_path=workdir / "redis.log",
            ready=self._pong,
            ready_timeout=30,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _pong(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False


class PostgresCluster(Service):
    """A private PostgreSQL cluster (initdb, then the server in the foreground) on a free port."""

    def __init__(self) -> None:
        if not POSTGRES_BINS:
            raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = POSTGRES_BINS[-1]
        self.port = free_port()
        # Outside pytest's private temp folder: the `postgres` user must reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="clinic-pg-"))
        self.datadir = self.workdir / "data"
        user = _postgres_user()
        if user:
            shutil.chown(self.workdir, user)
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.datadir), "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, user=user, env=_base_env(),
        )  # fmt: skip
        super().__init__(
            f"postgres-{self.port}",
            [str(self.bin / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
             "-k", str(self.workdir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            env=_base_env(),
            log_path=self.workdir / "postgres.log",
            ready=self._accepting,
            ready_timeout=60,
            user=user,
            # SIGTERM waits for every client to leave; SIGINT is the fast shutdown of a restart.
            stop_signal=signal.SIGINT,
        )  # fmt: skip
        if user:
            self.log_path.touch()
            shutil.chown(self.log_path, user)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _accepting(self) -> bool:
        try:
            with psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=2
            ):
                return True
        except psycopg.Error:
            return False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def running(*services: Service) -> Iterator[tuple[Service, ...]]:
    """Start the services in order; stop them all (in reverse) afterwards, printing the end of
    each log so a failure shows what the processes said."""
    started: list[Service] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        yield services
    finally:
        for service in reversed(services):
            service.stop()
            tail = service.log()[-2000:]
            if tail:
                print(f"--- {service.name} log (end) ---\n{tail}")


def redis_or_skip() -> None:
    import pytest

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")


def postgres_or_skip() -> None:
    import pytest

    if not POSTGRES_BINS:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed")
