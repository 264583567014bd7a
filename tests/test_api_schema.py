"""Property-based tests of every HTTP operation in the app's OpenAPI schema (schemathesis): the
web app runs as production runs it (a uvicorn process) and whatever schemathesis sends, valid or
not, signed in or not, no operation answers with a server error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from core import migrate
from core.settings import Settings
from tests.conftest import API_TOKEN
from tests.processes import running, web_process, web_url
from tests.support import free_port

ADMIN_TOKEN = "test-admin-token-schema-0123456789"
API = {"Authorization": f"Bearer {API_TOKEN}"}
STAFF = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Staff-Name": "Dana Reyes"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("schema")
    database_url = f"sqlite:///{workdir / 'clinic.db'}"
    migrate.upgrade(database_url)
    closed = f"http://127.0.0.1:{free_port()}"
    app_settings = Settings(
        _env_file=None,
        environment="test",
        data_dir=workdir,
        database_url=database_url,
        celery_broker_url=f"sqla+sqlite:///{workdir / 'broker.db'}",
        # Rasa away: turns answer at once with the "unavailable" reply (no 5xx either).
        rasa_url=closed,
        action_server_url=closed,
        api_token=API_TOKEN,
        admin_token=ADMIN_TOKEN,
        rate_limit_per_sender="100000/minute",
        kb_preload=False,
        # The channels on, so their webhooks check signatures rather than answer 503 (off).
        public_base_url="http://127.0.0.1:9",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="schema-test-auth-token",
        twilio_from_number="+15017122661",
        twilio_api_base_url=closed,
    )
    app = web_process(app_settings, Path(workdir))
    with running(app):
        yield web_url(app)


def examples(operation: Any, *, mode: GenerationMode, count: int) -> Callable[[], None]:
    """A Hypothesis test that sends `count` generated requests to one operation and checks that
    none answers with a server error."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        # Credentials that open each operation, so examples reach past authentication; the
        # negative mode sends what the schema forbids, headers included.
        signed_in = STAFF if case.path.startswith("/admin") else API
        response = case.call(headers={**(case.headers or {}), **signed_in}, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])

    return run


def test_no_operation_answers_with_a_server_error(server: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"the schema has an invalid operation: {result.err()}")
            continue
        operation = result.ok()
        # /readyz answers 503 by design while a dependency (Rasa, here) is away: that is the
        # readiness probe working, tested in test_resilience.py.
        if operation.path == "/readyz":
            continue
        tested += 1
        for mode, count in ((GenerationMode.POSITIVE, 6), (GenerationMode.NEGATIVE, 6)):
            try:
                examples(operation, mode=mode, count=count)()
            except Unsatisfiable:
                pass  # nothing invalid to send: no parameters, no body
            except Exception as exc:  # collected: one report for every operation
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:800]}")
    assert tested >= 10, "the schema lists fewer operations than the app serves"
    assert not failures, "\n\n".join(failures)
