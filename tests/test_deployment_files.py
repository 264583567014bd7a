"""The deployment files stay valid: docker-compose.yml parses and names every service of the
design; every setting the platform reads is documented in .env.example."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from core.settings import Settings
from tests.support import ROOT

DESIGN_SERVICES = {
    "web",
    "worker",
    "beat",
    "rasa",
    "action-server",
    "postgres",
    "redis",
    "chroma",
    "mattermost",
    "llama-cpp",
    "mattermost-bootstrap",
    "migrate",
    "proxy",
    "prometheus",
}


def test_compose_file_is_valid_and_names_every_service(tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (make test installs it)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    result = subprocess.run(
        # Every profile, so the optional services are checked too (docker-compose 1.x lists
        # them anyway; Compose v2 lists only those of the profiles named).
        [
            compose,
            "--profile",
            "gpu",
            "--profile",
            "setup",
            "--profile",
            "monitoring",
            "config",
            "--services",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == DESIGN_SERVICES


def test_every_setting_is_documented_in_env_example() -> None:
    documented = (ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert name.upper() in documented, name
