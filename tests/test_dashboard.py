"""``nnstudy dashboard``: optuna-dashboard on a real study's storage, seen in headless Chromium."""

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
               "--tracking-uri", rs.tracking_uri, "--port", str(free_port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{free_port}/dashboard/"
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
