"""Production settings pass `manage.py check --deploy`."""

from __future__ import annotations

import subprocess

from tests.conftest import run_manage


def _check_deploy(test_database_url: str, **env: str) -> subprocess.CompletedProcess:
    return run_manage(test_database_url, "check", "--deploy", "--fail-level", "WARNING", **env)


def test_production_settings_pass_check_deploy(test_database_url):
    result = _check_deploy(
        test_database_url,
        DEBUG="false",
        SECURE_TLS="true",
        ALLOWED_HOSTS="tollgate.example.com",
        SECRET_KEY="b7v$Qe1!x9Lr2@Tz8#Wm4%Yc6^Hn0&Kp3*Fs5(Gd7)Ja9_Ub1-Vq3+Xo5=Ie",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_defaults_are_flagged(test_database_url):
    result = _check_deploy(test_database_url)
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout  # the dev SECRET_KEY
