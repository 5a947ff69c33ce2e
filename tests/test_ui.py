"""The MLflow UI in a real browser, over a store that the project's CLI filled (issue 15 item 6).

`mlflow ui` (the .venv's) serves a temporary SQLite store holding one `make run` run and a
two-job sweep; Playwright drives Debian's chromium (no browser download; `make test`
apt-installs it) and checks, as a user would see it:

- the runs table lists the sweep's parent, and expanding it shows the children nested
  under it;
- a child's Artifacts tab shows `plots/network.png` as an image of the PNG's real size;
- the compare view of the children draws its parallel-coordinates plot, with the swept
  parameter on an axis and lines painted;
- no page writes an error to the browser console (see IGNORED_CONSOLE_ERRORS).

What the UI must show (ids, names, experiment) is read from the store, so the test does
not depend on how runs are named.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.artifacts import download_artifacts
from PIL import Image
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    expect,
    sync_playwright,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from conftest import fresh_store, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = "/usr/bin/chromium"
# The flags the machine's notes give for Debian's chromium here: without the background
# networking ones it keeps trying hosts that this closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MLFLOW = Path(sys.executable).with_name("mlflow")
#: How long one UI step may take (auto-waiting locators and expect); the 2 cores are shared.
STEP_MS = 30_000
expect.set_options(timeout=STEP_MS)
#: The parameter that the sweep below varies (optimizer=sgd,adam), as MLflow logs it.
SWEPT = "optimizer.name"

#: Console errors that are not the app's fault, each (URL path or None, text it contains):
IGNORED_CONSOLE_ERRORS = [
    # The UI asks for the signed-in user; that endpoint exists only when the server runs
    # MLflow's basic-auth app (`--app-name basic-auth`). Without auth the 404 is the
    # expected answer, and the UI goes on as an anonymous user.
    ("/ajax-api/2.0/mlflow/users/current", "status of 404"),
    # Chromium reports this when a ResizeObserver callback (AG Grid sizing its columns)
    # changes the layout within the same frame: the notifications are delivered in the
    # next frame, nothing is lost. It is the browser's notice, not an app failure.
    (None, "ResizeObserver loop completed with undelivered notifications"),
]


@dataclass(frozen=True)
class Run:
    """A run as the UI must show it."""

    id: str
    name: str
    params: dict[str, str]


@dataclass(frozen=True)
class Store:
    """The served store: where the UI is and what it must show."""

    url: str  # where mlflow ui answers
    uri: str  # the tracking store it serves
    experiment_id: str
    single: Run
    parent: Run
    children: list[Run]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() - t0 > timeout:
            pytest.fail(f"mlflow ui did not answer at {url}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One `make run` run and a two-job sweep made with the CLI, served by `mlflow ui`."""
    from mlflow.tracking import MlflowClient

    uri = fresh_store(tmp_path_factory)  # MLflow's tables already made: no migration races
    tmp = Path(uri.removeprefix("sqlite:///")).parent
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "mlflow-ui.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    # The server starts (≈8 s of imports) while the CLI trains. One worker: one browser.
    cmd = [str(MLFLOW), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*cmd, "--port", str(port), "--workers", "1"],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn worker is ended with it, by process group
        )
    try:
        # The run and the sweep write the store at once, as the joblib launcher's jobs do.
        with ThreadPoolExecutor(2) as pool:
            single = pool.submit(
                run_cli, f"tracking.uri={uri}", "plot.animate=false", f"hydra.run.dir={tmp / 'run'}"
            )
            sweep = pool.submit(
                run_cli,
                "--multirun",
                "+sweep=smoke",
                "model.hidden=[2]",
                f"tracking.uri={uri}",
                "train.epochs=30",
                "plot.enabled=true",  # the smoke sweep draws no figures; network.png is checked
                f"hydra.sweep.dir={tmp / 'multirun'}",
            )
            _check(single.result(), "the single run")
            _check(sweep.result(), "the sweep")
        client = MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        by_parent: dict[str | None, list[Run]] = {}
        for r in runs:
            run = Run(r.info.run_id, r.info.run_name, dict(r.data.params))
            by_parent.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(run)
        top = by_parent.get(None, [])
        parents = [r for r in top if r.id in by_parent]
        singles = [r for r in top if r.id not in by_parent]
        assert len(parents) == 1 and len(singles) == 1, f"the store holds {runs}"
        parent = parents[0]
        children = sorted(by_parent[parent.id], key=lambda r: r.name)
        assert len(children) == 2, f"the sweep has {len(children)} children"
        experiment_id = next(r.info.experiment_id for r in runs if r.info.run_id == parent.id)
        _wait_healthy(url, server, log)
        yield Store(url, uri, experiment_id, singles[0], parent, children)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Debian's chromium, headless, with a fresh profile."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test` apt-installs chromium"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1500, "height": 900},
        )
        context.set_default_timeout(STEP_MS)
        yield context
        context.close()


@dataclass
class Console:
    """What one page wrote to the console as errors, and threw."""

    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        where = msg.location.get("url", "")
        line = f"{msg.text} (at {where})"
        path = urllib.parse.urlsplit(where).path
        ignore = any(
            (p is None or p == path) and text in msg.text for p, text in IGNORED_CONSOLE_ERRORS
        )
        (self.ignored if ignore else self.errors).append(line)

    def on_pageerror(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def assert_clean(self) -> None:
        ignored = "".join(f"\n  (ignored) {line}" for line in self.ignored)
        errors = "".join(f"\n  {line}" for line in self.errors)
        assert not self.errors, f"the UI wrote errors to the browser console:{errors}{ignored}"


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[tuple[Page, Console]]:
    """A new tab whose console errors are collected."""
    tab = browser.new_page()
    console = Console()
    tab.on("console", console.on_console)
    tab.on("pageerror", console.on_pageerror)
    yield tab, console
    tab.close()


def exactly(text: str) -> re.Pattern[str]:
    """Match an element whose whole text is ``text``."""
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def run_link(page: Page, store: Store, run: Run) -> Locator:
    """The link to ``run``'s page in the runs table."""
    return page.locator(f"a[href='#/experiments/{store.experiment_id}/runs/{run.id}']")


def test_runs_table_nests_the_sweep_children_under_the_parent(
    store: Store, page: tuple[Page, Console]
) -> None:
    tab, console = page
    tab.goto(f"{store.url}/#/experiments/{store.experiment_id}/runs?workflowType=machine_learning")
    parent = run_link(tab, store, store.parent)
    expect(parent, "the sweep's parent is not in the runs table").to_have_text(store.parent.name)
    expect(
        run_link(tab, store, store.single), "the single run is not in the runs table"
    ).to_have_text(store.single.name)
    for child in store.children:  # collapsed: the children are under the parent, not beside it
        expect(
            run_link(tab, store, child),
            f"{child.name} is listed while its parent is collapsed: not nested under it",
        ).to_have_count(0)

    tab.get_by_role("gridcell").filter(has=parent).get_by_role("button").click()

    row_of = lambda link: tab.get_by_role("row").filter(has=link)
    parent_row = int(row_of(parent).get_attribute("aria-rowindex") or -1)
    parent_x = parent.bounding_box()["x"]
    rows = []
    for child in store.children:
        link = run_link(tab, store, child)
        expect(link, f"child {child.id} not shown after expanding").to_have_text(child.name)
        rows.append(int(row_of(link).get_attribute("aria-rowindex") or -1))
        x = link.bounding_box()["x"]
        assert x > parent_x, f"{child.name} is not indented under the parent ({x} <= {parent_x})"
    expected = list(range(parent_row + 1, parent_row + 1 + len(store.children)))
    assert sorted(rows) == expected, f"children in rows {rows}, not right below the parent's"
    console.assert_clean()


def test_child_page_shows_the_network_diagram(
    store: Store, page: tuple[Page, Console], tmp_path: Path
) -> None:
    tab, console = page
    child = store.children[0]
    tab.goto(f"{store.url}/#/experiments/{store.experiment_id}/runs/{child.id}")
    expect(tab.get_by_role("heading", name=child.name)).to_be_visible()
    tab.get_by_role("tab", name="Artifacts").click()
    folder = tab.get_by_label("plots", exact=True)
    expect(folder, "no plots/ folder in the child's artifact tree").to_be_visible()
    folder.click()
    node = tab.get_by_label("network.png", exact=True)
    expect(node, "no plots/network.png in the child's artifact tree").to_be_visible()
    node.click()

    image = tab.get_by_role("img", name="plots/network.png")
    expect(image, "plots/network.png is not shown as an image").to_be_visible()
    decoded = image.evaluate(
        "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight], () => null)"
    )
    png = download_artifacts(
        run_id=child.id,
        artifact_path="plots/network.png",
        tracking_uri=store.uri,
        dst_path=str(tmp_path),
    )
    with Image.open(png) as im:
        size = list(im.size)
    assert decoded == size, f"the browser decoded plots/network.png as {decoded}, not {size}"
    box = image.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100, f"the image is drawn at {box}"
    console.assert_clean()


#: Whether plotly's parcoords drew its lines: a pixel of the WebGL canvas that holds them
#: (queried afresh on every poll, as React may replace it) is not transparent.
LINES_PAINTED = """() => [...document.querySelectorAll('.js-plotly-plot canvas.gl-canvas-focus')]
  .some(c => { const o = document.createElement('canvas'); o.width = c.width;
    o.height = c.height; const g = o.getContext('2d'); g.drawImage(c, 0, 0);
    const d = g.getImageData(0, 0, o.width, o.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true; return false; })"""


def test_compare_view_draws_parallel_coordinates(store: Store, page: tuple[Page, Console]) -> None:
    tab, console = page
    query = urllib.parse.urlencode(
        {
            "runs": json.dumps([c.id for c in store.children]),
            "experiments": json.dumps([store.experiment_id]),
        }
    )
    tab.goto(f"{store.url}/#/compare-runs?{query}")
    expect(
        tab.get_by_role("tab", name="Parallel Coordinates Plot"), "the compare view did not open"
    ).to_be_visible()
    # plotly's parcoords trace: SVG axes over WebGL canvases that hold the lines
    plot = tab.locator(".js-plotly-plot").filter(has=tab.locator(".parcoords"))
    expect(plot, "no parallel-coordinates plot").to_be_visible()
    title = tab.locator(".axis-title").filter(has_text=exactly(SWEPT))
    expect(plot.locator(title), f"no axis for the swept {SWEPT}").to_have_count(1)
    ticks = plot.locator(".y-axis").filter(has=title).locator(".tick")
    values = sorted(c.params[SWEPT] for c in store.children)
    for value in values:
        expect(
            ticks.filter(has_text=exactly(value)), f"{SWEPT}={value} not on its axis"
        ).to_have_count(1)
    lines = plot.locator("canvas.gl-canvas-focus")
    expect(lines, "no canvas for the plot's lines").to_have_count(1)
    try:
        tab.wait_for_function(LINES_PAINTED)
    except PlaywrightTimeoutError:
        pytest.fail(f"the parallel-coordinates plot drew no lines in {STEP_MS} ms")
    console.assert_clean()
