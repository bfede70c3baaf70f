"""The control tower in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against the API with the tower mounted (``SHOPML_SERVE_UI=true``) on the session's
trained shop.

The shop is a copy of the served home (its champions, registry and online features), so the
moves made here leave the other tests' registry alone; its monitoring history (two checks of
``returns``) is written through the monitoring store's own functions, as ``shopml monitor``
writes it. One browser for the whole session; one context (cookies) per test.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shopml.lifecycle import registry
from shopml.lifecycle.tracking import configure, model_name
from shopml.settings import Settings
from tests.support.services import free_port, wait_http
from tests.support.tower import write_history
from tests.unit.serving.conftest import SERVED, build_served_home, serving_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCORE, ADMIN = "browser-score-5d1c", "browser-admin-8e2a"
USECASE = "returns"
# The service loads only these (loading every champion would double the start-up): the overview
# has a row for each.
TOWER = ["returns", "segments"]
PLOTS = ("chart-drift-features", "chart-drift-time", "chart-performance")


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving unit tests' trained home (built once per session, whoever asks first)."""
    return build_served_home(tmp_path_factory)


@dataclass
class Tower:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def tower(served_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tower]:
    """The API with the tower, on a copy of the served home with a second ``returns`` version
    (registered from the champion's own run) to promote and roll back."""
    import uvicorn

    from shopml.api import create_app

    home = tmp_path_factory.mktemp("tower") / "home"
    shutil.copytree(served_home, home, ignore=shutil.ignore_patterns("monitoring.sqlite*", "ui"))
    write_history(home, USECASE)
    settings = serving_settings(home, api_keys=[SCORE], admin_keys=[ADMIN], serve_ui=True)
    client = configure(settings)
    champion = registry.alias_version(client, USECASE, registry.CHAMPION)
    assert champion is not None
    client.create_model_version(model_name(USECASE), champion.source, champion.run_id)
    app = create_app(settings, usecases=TOWER)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=180)
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield Tower(url, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for this module (skipped, saying why, where there is none).

    Module-scoped on purpose: Playwright's sync API keeps its event loop marked running on this
    thread while the browser is open, so a session-wide browser made every later test in the
    worker look "async" (``asyncio.run`` refused, Prefect returned coroutines)."""
    from shopml.ui.screenshots import ScreenshotError, browser

    try:
        with browser() as b:
            yield b
    except ScreenshotError as exc:
        pytest.skip(f"{exc} (`make test` installs Debian's chromium)")


@dataclass
class Page:
    page: Any
    errors: list[str]  # console errors and uncaught exceptions, as they happened


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Any]:
    """``open_page() -> Page``: a fresh context (no cookies) whose console errors are kept."""
    contexts: list[Any] = []

    def make() -> Page:
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(60_000)  # a loaded shared machine, not a hung page
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        return Page(page, errors)

    yield make
    for context in contexts:
        context.close()


def sign_in(p: Page, url: str, key: str, target: str = "/ui/") -> None:
    """Sign in through the form, as a person does."""
    p.page.goto(f"{url}{target}")
    assert "/ui/login" in p.page.url  # sent to sign in first
    p.page.fill("input[name=key]", key)
    p.page.click("button[type=submit]")
    p.page.wait_for_url(re.compile(re.escape(f"{url}{target}") + r"$"))


def champion_of(settings: Settings) -> str:
    mv = registry.alias_version(configure(settings), USECASE, registry.CHAMPION)
    assert mv is not None
    return str(mv.version)


def test_overview_loads_with_a_row_per_use_case(tower: Tower, open_page: Any) -> None:
    from shopml.usecases import get_usecases

    p = open_page()
    sign_in(p, tower.url, SCORE)
    table = p.page.locator("[data-testid=overview]")
    table.wait_for()
    rows = table.locator("tbody tr")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.usecase)")) == sorted(TOWER)
    assert set(TOWER) <= set(SERVED) <= set(get_usecases())
    returns = table.locator(f"tr[data-usecase={USECASE}]")
    assert returns.locator(".status").inner_text() == "alert"
    assert "v1" in returns.inner_text()
    assert "read only" in p.page.locator("[data-testid=who]").inner_text()
    assert p.errors == []


def test_each_plot_renders_with_data(tower: Tower, open_page: Any) -> None:
    p = open_page()
    sign_in(p, tower.url, SCORE, f"/ui/u/{USECASE}")
    for plot in PLOTS:
        canvas = p.page.locator(f"[data-testid={plot}]")
        canvas.wait_for()
        # The chart Chart.js drew on this canvas, and how many points each of its series has.
        points = canvas.evaluate(
            "c => { const chart = Chart.getChart(c);"
            " return chart ? chart.data.datasets.map(d => d.data.length) : null; }"
        )
        assert points, f"{plot}: no chart drawn"
        assert all(n > 0 for n in points), (plot, points)
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100, (plot, box)
        # Something was painted: not every pixel of the canvas is the same.
        painted = canvas.evaluate(
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " for (let i = 4; i < d.length; i += 4) { if (d[i + 3] !== d[3]) return true; }"
            " return false; }"
        )
        assert painted, f"{plot}: blank canvas"
    series = p.page.locator("[data-testid=chart-performance]").evaluate(
        "c => Chart.getChart(c).data.datasets.map(d => d.label)"
    )
    assert set(series) == {"live", "at test", "oracle"}
    assert p.page.locator("[data-testid=alerts] tbody tr").count() == 1
    assert p.page.locator("[data-testid=link-mlflow]").get_attribute("href")
    assert p.errors == []
    # The newest check's Evidently report opens, sandboxed (its own scripts, no tower cookie).
    href = p.page.locator("[data-testid=link-evidently]").get_attribute("href")
    assert href and href.startswith(f"/ui/u/{USECASE}/report/")
    report = p.page.goto(tower.url + href)
    assert report is not None and report.status == 200
    assert report.headers["content-security-policy"].startswith("sandbox")
    # Evidently's viewer draws the report in the page: the compared columns show.
    p.page.wait_for_function("() => document.body.innerText.includes('price')")


def test_a_scoring_key_cannot_act(tower: Tower, open_page: Any) -> None:
    before = champion_of(tower.settings)
    p = open_page()
    sign_in(p, tower.url, SCORE, f"/ui/u/{USECASE}")
    assert p.page.locator("[data-testid=no-actions]").is_visible()
    assert p.page.locator("[data-testid=actions]").count() == 0
    # Asking for the confirmation page directly: refused, on a page that says why.
    response = p.page.goto(f"{tower.url}/ui/u/{USECASE}/confirm?action=rollback")
    assert response is not None and response.status == 403
    assert "admin" in p.page.locator("[data-testid=error]").inner_text()
    # Posting the action from the signed-in page (a forged form): refused too.
    status = p.page.evaluate(
        "async ([url]) => (await fetch(url, {method: 'POST', body: new URLSearchParams("
        "{confirm: 'yes', version: '2'})})).status",
        [f"{tower.url}/ui/u/{USECASE}/promote"],
    )
    assert status == 403
    assert champion_of(tower.settings) == before


def test_an_admin_promotes_and_rolls_back(tower: Tower, open_page: Any) -> None:
    assert champion_of(tower.settings) == "1"
    p = open_page()
    sign_in(p, tower.url, ADMIN, f"/ui/u/{USECASE}")
    page = p.page
    assert "admin" in page.locator("[data-testid=who]").inner_text()
    # Promote v2: pick it, confirm with a reason, and land back on the page with the outcome.
    page.select_option("[data-testid=promote-version]", "2")
    page.click("[data-testid=promote]")
    page.locator("[data-testid=confirm]").wait_for()
    assert "Promote v2 of returns?" in page.locator("h1").inner_text()
    page.fill("input[name=reason]", "browser test")
    page.click("[data-testid=confirm-button]")
    page.wait_for_url(re.compile(r"/ui/u/returns\?done="))
    assert "v2 is now champion (was v1)" in page.locator("[data-testid=message]").inner_text()
    assert page.locator("[data-testid=champion]").inner_text() == "v2"
    assert champion_of(tower.settings) == "2"
    mv = registry.alias_version(configure(tower.settings), USECASE, registry.CHAMPION)
    assert mv is not None and "browser test" in mv.tags["shopml.gate.override"]
    # The service in the same process serves the new champion at once.
    ready = page.request.get(f"{tower.url}/ready", headers={"authorization": f"Bearer {SCORE}"})
    assert str(ready.json()["models"][USECASE]) == "2", ready.text()
    # Roll back: v1 again.
    page.click("[data-testid=rollback]")
    page.locator("[data-testid=confirm]").wait_for()
    page.click("[data-testid=confirm-button]")
    page.wait_for_url(re.compile(r"/ui/u/returns\?done="))
    assert "rolled back from v2 to v1" in page.locator("[data-testid=message]").inner_text()
    assert page.locator("[data-testid=champion]").inner_text() == "v1"
    assert champion_of(tower.settings) == "1"
    assert p.errors == []


def test_an_admin_starts_a_retrain_and_a_scoring_key_cannot(
    tower: Tower, open_page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in the file: the gate may make the retrained version champion."""
    import os
    import signal

    from shopml.lifecycle.tracking import FLOW_RUN_TAG
    from shopml.serving.app import Auth
    from shopml.ui import actions

    # The job's Prefect (ephemeral) database of its own, not another test's.
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    client = configure(tower.settings)
    before = {mv.version for mv in client.search_model_versions(f"name='{model_name(USECASE)}'")}
    champion = champion_of(tower.settings)

    # A scoring key: no retrain button, the confirmation refused, a forged form refused.
    p = open_page()
    sign_in(p, tower.url, SCORE, f"/ui/u/{USECASE}")
    assert p.page.locator("[data-testid=retrain]").count() == 0
    response = p.page.goto(f"{tower.url}/ui/u/{USECASE}/confirm?action=retrain")
    assert response is not None and response.status == 403
    status = p.page.evaluate(
        "async ([url]) => (await fetch(url, {method: 'POST', body: new URLSearchParams("
        "{confirm: 'yes', trials: '0'})})).status",
        [f"{tower.url}/ui/u/{USECASE}/retrain"],
    )
    assert status == 403
    assert actions.retrain_job(tower.settings, USECASE) is None  # nothing started

    # An admin: Retrain..., the confirmation with a tiny budget, back on the page.
    p = open_page()
    sign_in(p, tower.url, ADMIN, f"/ui/u/{USECASE}")
    page = p.page
    page.click("[data-testid=retrain]")
    page.locator("[data-testid=confirm]").wait_for()
    assert "Retrain returns?" in page.locator("h1").inner_text()
    page.click("details summary")
    page.fill("input[name=trials]", "0")
    # Another budget than the served home's training (trials 0, 45 s): a training of its
    # own, not the earlier one reused as unchanged.
    page.fill("input[name=timeout]", "5")
    page.click("[data-testid=confirm-button]")
    page.wait_for_url(re.compile(r"/ui/u/returns\?done="))
    assert "retrain started" in page.locator("[data-testid=message]").inner_text()
    started = actions.retrain_job(tower.settings, USECASE)
    assert started is not None and started.pid
    try:
        job = actions.wait_for(tower.settings, USECASE, timeout_s=900)
    finally:
        still = actions.retrain_job(tower.settings, USECASE)
        if still is not None and still.state == "running":
            os.killpg(started.pid, signal.SIGTERM)  # its own session: the job and its server
    assert job is not None and job.state == "finished", (job, Path(started.log or "").read_text())
    outcome = job.outcome or {}
    assert outcome["status"] in registry.REGISTERED, outcome
    version = str(outcome["version"])
    assert version not in before

    # Recorded as the CLI's trainings are: the gate's verdict and reasons on the new version,
    # its MLflow run tagged with the Prefect flow run that trained it; and who asked.
    key_id = Auth.digest(ADMIN).hex()[:12]
    mv = client.get_model_version(model_name(USECASE), version)
    verdict = mv.tags["shopml.gate.verdict"]
    assert (verdict == "promoted") == (outcome["status"] == "promoted"), (verdict, outcome)
    assert mv.tags["shopml.gate.reasons"].startswith("["), mv.tags
    assert key_id in mv.tags[registry.REQUEST_TAG]
    flow_run = client.get_run(mv.run_id).data.tags.get(FLOW_RUN_TAG)
    assert flow_run
    now_champion = champion_of(tower.settings)
    assert now_champion == (version if outcome["status"] == "promoted" else champion)

    # The page shows it: the job's outcome, the new version in the gate history with its
    # verdict, the request and its runs.
    page.goto(f"{tower.url}/ui/u/{USECASE}")
    text = page.locator("[data-testid=retrain-job]").inner_text()
    assert "finished" in text and f"v{version}" in text, text
    row = page.locator(f"[data-testid=gate-history] tr[data-version='{version}']")
    assert row.locator(".verdict").inner_text() == verdict
    # Coloured by its verdict ("insufficient evidence" is one class, not two).
    assert f"v-{verdict.replace(' ', '-')}" in row.locator(".verdict").get_attribute("class")
    assert key_id in row.locator("[data-testid=requested]").inner_text()
    links = row.locator("a").evaluate_all("as => as.map(a => a.href)")
    assert any(mv.run_id in h for h in links), links
    assert any(h.endswith(f"/runs/flow-run/{flow_run}") for h in links), links
    assert page.locator("[data-testid=champion]").inner_text() == f"v{now_champion}"
    assert p.errors == []
