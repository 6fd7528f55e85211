"""`tftmon dashboard` becomes `streamlit run` of the app on 127.0.0.1, its settings passed as TFTMON_DASHBOARD_*
variables; a bad setting is a one-line usage error. (The browser test runs the command for real.)"""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tftmon.cli import main


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append(argv))
    for name in ("SERVICE_URL", "FEEDER_URL", "REFRESH_SECONDS"):
        monkeypatch.delenv(f"TFTMON_DASHBOARD_{name}", raising=False)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what the command exports stays in this test
    return calls


def test_dashboard_runs_streamlit_on_localhost_with_its_settings(execs: list[list[str]]) -> None:
    argv = ["dashboard", "--port", "8600", "--service-url", "http://127.0.0.1:3100", "--refresh-seconds", "5"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    (call,) = execs
    assert call[:5] == [sys.executable, "-m", "streamlit", "run", str(ROOT / "tftmon" / "dashboard" / "app.py")]
    options = dict(zip(call[5::2], call[6::2], strict=True))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8600"
    assert options["--server.headless"] == "true"
    assert os.environ["TFTMON_DASHBOARD_SERVICE_URL"] == "http://127.0.0.1:3100"
    assert os.environ["TFTMON_DASHBOARD_FEEDER_URL"] == "http://127.0.0.1:3001"
    assert os.environ["TFTMON_DASHBOARD_REFRESH_SECONDS"] == "5.0"


def test_a_bad_setting_is_a_usage_error(execs: list[list[str]]) -> None:
    result = CliRunner().invoke(main, ["dashboard", "--service-url", "localhost:3000"])
    assert result.exit_code == 2 and not execs
    assert "Error: invalid DashboardSettings: service_url: Value error, 'localhost:3000' is not an http(s) URL" in (
        result.output
    )
    assert "Traceback" not in result.output
