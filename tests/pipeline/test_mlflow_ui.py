"""The link a sweep prints opens its runs in a real browser: the MLflow UI (``mlflow ui`` on
127.0.0.1) over the store of a small real sweep, driven by headless Chromium (Debian's
``chromium``) through Playwright's Python package. `.ci/run` installs both; where they are
absent locally the test is skipped with the reason."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

try:
    import playwright.sync_api  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="Playwright's Python package is not installed "
                       "(`pip install playwright`; .ci/run installs it)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium executable "
                       "(`apt-get install -y chromium`; .ci/run installs it)"),
    pytest.mark.timeout(1500),
]

# Two epochs, three trials, two at once: the smallest sweep with a parent, children and
# (usually) a pruned trial.
UI_SWEEP = {
    "name": "clear-ui",
    "dataset": {"synthetic": True, "raw": False, "set": {"n_users": 100, "n_items": 80, "n_interactions": 1500}},
    "train": {"max_epochs": 2, "patience": 1, "batch_size": 512},
    "search": {
        "redundancy_rank": {"type": "choice", "values": [2, 4]},
        "projection_strength": {"type": "choice", "values": [0.5, 0.9]},
        "refresh_every": {"type": "choice", "values": [1, 2]},
    },
    "num_samples": 3,
    "max_concurrent": 2,
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": None},
    "storage": {"path": "runs/ray_results"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui-sweep")
    config = folder / "ui.yaml"
    config.write_text(yaml.safe_dump(UI_SWEEP))
    old = os.getcwd()
    os.chdir(folder)
    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        from contextlib import redirect_stdout
        from io import StringIO

        out = StringIO()
        with redirect_stdout(out):
            code = main(["sweep", "--config", str(config), "--no-progress", "--in-process", "--json"])
    finally:
        os.chdir(old)
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    assert code == 0
    return folder, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def mlflow_ui(swept):
    folder, _ = swept
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{folder}/mlruns.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow ui did not start") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_printed_link_opens_the_sweeps_runs_nested_with_the_papers_parameters_and_test_recall(
        swept, mlflow_ui, tmp_path):
    from playwright.sync_api import sync_playwright

    _, result = swept
    link = result["ui_link"]
    assert link.startswith("http://127.0.0.1:5000/#/experiments/") and "workflowType=machine_learning" in link
    url = mlflow_ui + link[len("http://127.0.0.1:5000"):]
    counts = result["counts"]
    names = [result["best_trial_name"]]
    assert names[0].startswith("clear k=")
    # A slow CI box renders the grid slowly: generous waits, each on a thing the test needs.
    wait_ms = 240_000
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1000})
            page.goto(url, timeout=wait_ms, wait_until="domcontentloaded")
            parent_name = "clear sweep clear-ui"
            page.get_by_text(parent_name, exact=True).first.wait_for(timeout=wait_ms)
            page.get_by_text("best/test/recall_at_20").first.wait_for(timeout=wait_ms)
            # The sweep's parent is the first row; its expander (the run name cell's only button)
            # shows the trials nested under it.
            parent_row = page.locator('[role="row"]', has_text=parent_name).first
            parent_row.locator('button[data-component-id*="runnamecellrenderer"]').click()
            for name in names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=wait_ms)
            page.wait_for_timeout(3000)  # let the grid finish painting before the screenshot
            shot = tmp_path / "runs_table.png"
            page.screenshot(path=str(shot))
            headers = " ".join(page.locator('[role="columnheader"]').all_inner_texts())
            rows = page.locator('[role="row"]').all_inner_texts()
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    for column in ("model.redundancy_rank", "model.projection_strength", "model.refresh_every",
                   "best/test/recall_at_20"):
        assert column in headers, f"column {column} missing from the runs table: {headers}"
    # The parent row comes first and every trial follows it (nested), each trial once.
    flat = [" ".join(r.split()) for r in rows]
    parent_at = next(i for i, r in enumerate(flat) if parent_name in r)
    child_rows = [i for i, r in enumerate(flat) if "clear k=" in r]
    assert len(child_rows) == sum(counts.values()) == UI_SWEEP["num_samples"]
    assert all(i > parent_at for i in child_rows)
