"""``nnstudy ui`` and ``nnstudy dashboard``: what is checked before a server starts, and optuna-dashboard on
a real study's storage seen in headless Chromium (the MLflow UI's browser test is tests/test_ui_browser.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nnstudy.cli import cli

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"


def test_dashboard_without_the_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if it were not installed
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["dashboard"])
    assert result.exit_code == 2
    assert result.output.strip() == ('Error: nnstudy dashboard needs optuna-dashboard, which is not installed; '
                                     'allowed: pip install "nnstudy[dashboard]"')
    assert list(tmp_path.iterdir()) == []


def test_dashboard_needs_an_existing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["dashboard"])
    assert result.exit_code == 2 and "no study store at" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["ui", "dashboard"])
def test_servers_refuse_what_they_cannot_serve_before_starting(recorded_study: Callable[..., Any], command: str,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rs = recorded_study()
    stores = ["--storage", rs.storage, "--tracking-uri", rs.tracking_uri]
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["--study-name", "nope", *stores], "--study-name 'nope': no such study in"),
        ([*stores, "--host", "nosuchhost.invalid"], "--host nosuchhost.invalid --port"),
        ([*stores, "--port", "99999"], "--port 99999: allowed: 1 to 65535"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, [command, *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = CliRunner().invoke(cli, [command])
    assert result.exit_code == 2 and "no study store at" in result.output, result.output
    assert list(empty.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "empty"])


def test_the_printed_links_open_the_study() -> None:
    from nnstudy.servers import experiment_url

    assert experiment_url("http://h:1", "7") == "http://h:1/#/experiments/7?workflowType=machine_learning"
    assert experiment_url("http://h:1", None) == "http://h:1/#/experiments?workflowType=machine_learning"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dashboard_shows_the_study_and_its_trials(recorded_study: Callable[..., Any], free_port: int) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (CI installs Chromium; this test needs a real browser)")
    from playwright.sync_api import expect, sync_playwright

    rs = recorded_study()
    for i in range(3):
        rs.add(0.5 - 0.1 * i, {"learning_rate": 0.01 * (i + 1), "optimizer": "adam"})
    command = [str(Path(sys.executable).parent / "nnstudy"), "dashboard", "--storage", rs.storage,
               "--tracking-uri", rs.tracking_uri, "--port", str(free_port), "--study-name", "tiny"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{free_port}/dashboard/"
        assert server.stdout is not None
        assert server.stdout.readline().decode().startswith(f"Optuna dashboard: {url}studies/{rs.study._study_id}")
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    server.stdout.read().decode() if server.stdout else "no output"
                time.sleep(0.3)
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"],
                                         headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                expect.set_options(timeout=30_000)
                page.goto(url)
                study_link = page.get_by_role("link", name="tiny").or_(page.get_by_text("tiny", exact=True)).first
                expect(study_link).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "dashboard_studies.png"))
                study_id = rs.study._study_id
                page.goto(f"{url}studies/{study_id}/trials")
                for number in range(3):
                    expect(page.get_by_text(f"Trial {number}", exact=False).first).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "dashboard_trials.png"))
            finally:
                browser.close()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
