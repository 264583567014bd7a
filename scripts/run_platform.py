"""`make run`: start the whole platform on embedded defaults and print its URL.

Starts the Rasa action server, the Rasa server, a Celery worker and the web app, each in its own
process group with its log in var/log/. Ctrl-C (or any process dying) stops all of them.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
LOGS = VAR / "log"
LOCAL_ENV = VAR / "local.env"
RASA_BIN = ROOT / ".venv-rasa" / "bin"
PLATFORM_BIN = ROOT / ".venv" / "bin"
STARTUP_TIMEOUT_S = 300


def local_secrets() -> dict[str, str]:
    """Generated API and admin tokens kept in var/local.env, so `make run` needs no setup."""
    values: dict[str, str] = {}
    if LOCAL_ENV.exists():
        for line in LOCAL_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and not key.startswith("#"):
                values[key.strip()] = value.strip()
    missing = [k for k in ("API_TOKEN", "ADMIN_TOKEN", "CONSOLE_ADMIN_PASSWORD") if k not in values]
    for key in missing:
        values[key] = secrets.token_urlsafe(32)
    if missing:
        LOCAL_ENV.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        LOCAL_ENV.chmod(0o600)
    return values


def environment() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in local_secrets().items():
        env.setdefault(key, value)
    rasa_port = env.setdefault("RASA_PORT", "5005")
    action_port = env.setdefault("ACTION_PORT", "5055")
    env.setdefault("DATA_DIR", str(VAR))
    env.setdefault("RASA_URL", f"http://127.0.0.1:{rasa_port}")
    env.setdefault("ACTION_SERVER_URL", f"http://127.0.0.1:{action_port}")
    env.setdefault("RASA_TRACKER_DB", str(VAR / "rasa" / "tracker.db"))
    env.setdefault("PORT", "8000")
    env.setdefault("HOST", "127.0.0.1")
    env["PYTHONUNBUFFERED"] = "1"
    # The web app and the worker write their metrics here, so the web app's /metrics shows both
    # (prometheus_client's multiprocess mode; docs/OBSERVABILITY.md).
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR / "metrics"))
    # The action server (Rasa's environment) tells patients the emergency number too; it reads
    # the environment, so a value set only in .env is passed on here.
    env.setdefault("EMERGENCY_NUMBER", _dotenv().get("EMERGENCY_NUMBER", "911"))
    return env


def _dotenv() -> dict[str, str]:
    path = ROOT / ".env"
    if not path.exists():
        return {}
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {k.strip(): v.strip().strip("\"'") for k, v in pairs}


def empty_metrics_dir(folder: Path) -> None:
    """The last run's files would add its counts to this run's. Only prometheus_client's own
    files are removed, in case the folder was set to one that holds anything else."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


FIRST_ADMIN = """
import os
from core.settings import get_settings
from webapp.users import create_user, list_users
url = get_settings().database_url
if not list_users(url):
    create_user(url, "admin", os.environ["CONSOLE_ADMIN_PASSWORD"], "admin", "Administrator",
                actor="make-run")
    print("created")
"""


def first_admin(env: dict[str, str]) -> None:
    """With no console account yet, an `admin` one whose password is kept in var/local.env, so
    the console can be opened at once; more accounts: `python -m webapp.users add`."""
    done = subprocess.run(
        [str(PLATFORM_BIN / "python"), "-c", FIRST_ADMIN],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    if "created" in done.stdout:
        print(">> console account 'admin' created (CONSOLE_ADMIN_PASSWORD in var/local.env)")


def commands(env: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each process's command line and environment."""
    # Rasa's endpoints.yml wants the action server's webhook URL, the platform its base URL.
    rasa_env = {
        **env,
        "ACTION_SERVER_URL": f"{env['ACTION_SERVER_URL'].rstrip('/')}/webhook",
        "RASA_TELEMETRY_ENABLED": "false",
    }
    rasa, celery, uvicorn = (
        str(RASA_BIN / "rasa"),
        str(PLATFORM_BIN / "celery"),
        str(PLATFORM_BIN / "uvicorn"),
    )
    return {
        "action-server": (
            [rasa, "run", "actions", "--actions", "bot.actions", "-p", env["ACTION_PORT"]],
            rasa_env,
        ),
        "rasa": (
            [
                rasa,
                "run",
                "--enable-api",
                "-i",
                "127.0.0.1",
                "-p",
                env["RASA_PORT"],
                "-m",
                str(VAR / "rasa" / "models"),
                "--endpoints",
                "bot/endpoints.yml",
                "--credentials",
                "bot/credentials.yml",
            ],
            rasa_env,
        ),
        "worker": (
            # --beat: the same process runs the periodic check that reminds staff of
            # unclaimed cases (production runs beat as its own service).
            [
                celery,
                "-A",
                "core.tasks",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "--beat",
                "--schedule",
                str(VAR / "celerybeat-schedule"),
            ],
            env,
        ),
        "web": (
            [
                uvicorn,
                "webapp.main:app",
                "--host",
                env["HOST"],
                "--port",
                env["PORT"],
                "--no-access-log",
            ],
            env,
        ),
    }


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (local URL)
            return bool(response.status == 200)
    except OSError:
        return False


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def report_exited(processes: dict[str, subprocess.Popen[bytes]]) -> bool:
    """Whether a process has died; if so, say which, with the end of its log."""
    for name, process in processes.items():
        if process.poll() is not None:
            print(
                f"\n!! {name} exited with code {process.returncode}; stopping everything. "
                f"Last lines of var/log/{name}.log:\n{tail(LOGS / f'{name}.log')}",
                flush=True,
            )
            return True
    return False


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main() -> int:
    env = environment()
    LOGS.mkdir(parents=True, exist_ok=True)
    (VAR / "rasa").mkdir(parents=True, exist_ok=True)
    empty_metrics_dir(Path(env["PROMETHEUS_MULTIPROC_DIR"]))
    print(">> database migrations", flush=True)
    subprocess.run([str(PLATFORM_BIN / "python"), "-m", "core.migrate"], env=env, check=True)
    first_admin(env)

    processes: dict[str, subprocess.Popen[bytes]] = {}
    # SIGTERM (a service manager) stops everything as Ctrl-C does; SIGINT is set explicitly
    # because a shell that starts us in the background hands it down ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        for name, (command, process_env) in commands(env).items():
            log = (LOGS / f"{name}.log").open("ab")
            processes[name] = subprocess.Popen(
                command,
                cwd=ROOT,
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            print(f">> started {name} (log: var/log/{name}.log)", flush=True)
        url = f"http://{env['HOST']}:{env['PORT']}"
        print(
            ">> waiting for Rasa to load its model and every service to be ready",
            end="",
            flush=True,
        )
        started = time.monotonic()
        while not ready(f"{url}/readyz"):
            if report_exited(processes):
                return 1
            if time.monotonic() - started > STARTUP_TIMEOUT_S:
                print(f"\n!! not ready after {STARTUP_TIMEOUT_S}s: see {url}/readyz and var/log/")
                return 1
            print(".", end="", flush=True)
            time.sleep(2)
        print(
            f"\n\n   Clinic assistant is running: {url}\n"
            f"   API: POST {url}/api/v1/messages (token in var/local.env)\n"
            f"   Staff console: {url}/console (user admin, CONSOLE_ADMIN_PASSWORD in var/local.env;"
            " more accounts: .venv/bin/python -m webapp.users add)\n"
            f"   Logs: var/log/   Stop: Ctrl-C\n",
            flush=True,
        )
        while not report_exited(processes):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        print("\n>> stopping", flush=True)
        return 0
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
