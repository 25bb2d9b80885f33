"""Real-browser check of the MLflow UI that ``nnstudy ui`` starts on a tiny real study.

A tiny study runs through the CLI in a temp dir, ``nnstudy ui`` serves its store on a free local
port (in its own process group, stopped in the fixture's teardown), and headless Chromium (via
Playwright) opens the experiment's runs page and one trial's run page. Screenshots go to
``test-artifacts/`` at the repository root. Skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
STUDY = "browser-study"
HEALTH_TIMEOUT_S = 90.0
PAGE_TIMEOUT_MS = 30_000



@dataclass
class UiStudy:
    url: str
    experiment_id: str
    parent_run_id: str
    children: dict[str, str]  # run name -> run id
    last_metrics: dict[str, dict[str, float]]  # run id -> metric -> last logged value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member exists but belongs to someone else; cannot happen here
        return True
    return True


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group of ``proc`` (nnstudy, mlflow, uvicorn and its workers),
    then SIGKILL whatever is still there after a grace period."""
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not linger as a zombie group member
        if not _group_alive(pgid):
            break
        time.sleep(0.2)
    else:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"nnstudy ui exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"MLflow UI not healthy after {HEALTH_TIMEOUT_S:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def ui_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, e2e_spec: Callable[..., Path]) -> Iterator[UiStudy]:
    """A tiny finished study in ``tmp_path`` and ``nnstudy ui`` serving it on a free port."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (CI installs Chromium; this test needs a real browser)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = e2e_spec(STUDY, study={"n_trials": 2}, train={"max_epochs": 4})
    result = CliRunner().invoke(cli, ["run", str(spec), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("nnstudy.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("nnstudy.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.run_name == STUDY
    children = {r.info.run_name: r.info.run_id for r in trials}
    assert sorted(children) == ["trial-0000", "trial-0001"]
    last_metrics = {r.info.run_id: dict(r.data.metrics) for r in trials}

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "ui.log"
    nnstudy = Path(sys.executable).parent / "nnstudy"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(nnstudy), "ui", "--port", str(port), "--study-name", STUDY], cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_healthy(url, proc, log)
        # the printed link opens the study in the model-training view
        assert f"{url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning" in log.read_text()
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        yield UiStudy(url=url, experiment_id=experiment.experiment_id, parent_run_id=parents[0].info.run_id,
                      children=children, last_metrics=last_metrics)
    finally:
        _stop_group(proc)
        assert not _group_alive(proc.pid), "processes of nnstudy ui survived SIGKILL"


def test_mlflow_ui_shows_study_and_trials(ui_study: UiStudy) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    view = "?workflowType=machine_learning"  # what the printed link asks for: the model-training view
    runs_url = f"{ui_study.url}/#/experiments/{ui_study.experiment_id}/runs"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            expect.set_options(timeout=PAGE_TIMEOUT_MS)
            try:
                # the experiment opens on its runs (model training), not on GenAI traces
                page.goto(f"{ui_study.url}/#/experiments/{ui_study.experiment_id}{view}")
                grid_cell = page.locator('[role="gridcell"]')
                parent_cell = grid_cell.filter(has=page.locator(f'a[href*="/runs/{ui_study.parent_run_id}"]'))
                expect(parent_cell).to_have_count(1)
                expect(parent_cell.locator(f'a[href*="/runs/{ui_study.parent_run_id}"]')).to_have_text(STUDY)
                expect(page.get_by_text("Traces", exact=True).and_(page.locator("h2"))).to_have_count(0)
                # the runs table's Dataset column names the data set and its digest
                expect(page.locator("[role=columnheader][col-id=\"attributes.`Dataset`\"]")).to_be_visible()
                expect(page.get_by_text(re.compile(r"^pass_fail \([0-9a-f]{16}\)$")).first).to_be_visible()
                for run_id in ui_study.children.values():
                    expect(page.locator(f'a[href*="/runs/{run_id}"]')).to_have_count(0)

                # the parent's expander is the only button in its run-name cell (it has no aria-label)
                expander = parent_cell.locator("button")
                expect(expander).to_have_count(1)
                expander.click()
                for name, run_id in ui_study.children.items():
                    child_link = grid_cell.locator(f'a[href*="/runs/{run_id}"]')
                    expect(child_link).to_be_visible()
                    expect(child_link).to_have_text(name)
                page.screenshot(path=str(ARTIFACTS / "ui_runs.png"))

                # the parent run: the study's description, its data set and the best model among its logged models
                page.goto(f"{runs_url}/{ui_study.parent_run_id}{view}")
                expect(page.get_by_role("heading", name=STUDY, exact=True)).to_be_visible()
                expect(page.get_by_text(f"{STUDY}: 2 trials (2 complete).", exact=False)).to_be_visible()
                expect(page.get_by_text(re.compile(r"^Logged models \(\d+\)$"))).to_be_visible()
                expect(page.get_by_text(re.compile(r"^pass_fail \([0-9a-f]{16}\)$")).first).to_be_visible()
                best_link = page.get_by_role("link", name=re.compile(r"^trial \d+$"))
                expect(best_link.first).to_have_attribute("href", re.compile(r"/runs/[0-9a-f]{32}$"))
                page.screenshot(path=str(ARTIFACTS / "ui_parent.png"), full_page=True)

                # a trial's run page: its Overview lists the logged metrics, loss and val_loss among them
                name, run_id = sorted(ui_study.children.items())[0]
                page.goto(f"{runs_url}/{run_id}{view}")
                expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
                metrics = ui_study.last_metrics[run_id]
                for metric in ("loss", "val_loss"):
                    link = page.get_by_role("link", name=metric, exact=True)  # metric names link to its charts
                    expect(link).to_be_visible()
                    expect(link).to_have_attribute("href", re.compile(rf"/runs/{run_id}/model-metrics"))
                    row = page.get_by_role("row").filter(has=link)
                    expect(row).to_contain_text(repr(metrics[metric]))  # the last logged value
                page.get_by_role("link", name="val_loss", exact=True).scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / "ui_child.png"))

                # its charts draw: one plot per curve, with lines in them
                page.goto(f"{runs_url}/{run_id}/model-metrics{view}")
                expect(page.locator(".js-plotly-plot").first).to_be_visible()
                expect(page.locator("path.js-line").first).to_be_attached()
                assert page.locator(".js-plotly-plot").count() >= 2
                page.screenshot(path=str(ARTIFACTS / "ui_charts.png"))
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "ui_failure.png"))
                raise
        finally:
            browser.close()
