"""Screenshots of the control tower, for the README and the docs: ``shopml ui --screenshots
DIR`` serves the tower on a free loopback port, opens it in headless Chromium (Debian's
``chromium``, driven by Playwright) and saves the overview and each trained use case's page.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopml.settings import Settings

# Chromium as these machines run it: no sandbox (root in a container), no GPU, nothing fetched
# in the background.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDTH, HEIGHT = 1400, 900


class ScreenshotError(RuntimeError):
    """No browser to take the screenshots with (the message says what to install)."""


def chromium_path() -> str | None:
    """Debian's chromium (``SHOPML_CHROMIUM`` overrides): on PATH, else beside this Python
    (``make test`` links it into ``.venv/bin``); None when there is none."""
    configured = os.environ.get("SHOPML_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    beside = str(Path(sys.executable).parent)
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name) or shutil.which(name, path=beside)
        if found:
            return found
    return None


@contextmanager
def browser() -> Iterator[Any]:
    """Headless Chromium under Playwright; ``ScreenshotError`` when either is missing."""
    path = chromium_path()
    if path is None:
        raise ScreenshotError(
            "no chromium found: install Debian's (`apt-get install -y chromium`) or set "
            "SHOPML_CHROMIUM to a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ScreenshotError(
            "playwright is not installed: `pip install 'shopml[dev]'` (or `pip install playwright`)"
        ) from None
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise ScreenshotError("the control tower did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def take_screenshots(
    settings: Settings, folder: Path, usecases: list[str] | None = None
) -> list[Path]:
    """Save ``overview.png`` and ``<usecase>.png`` for each use case with a champion, or for
    those named (the page signed in with an admin key, so the actions show)."""
    from shopml.lifecycle.registry import describe
    from shopml.lifecycle.tracking import configure
    from shopml.serving.app import Auth
    from shopml.ui.app import create_ui_app, standalone_app
    from shopml.usecases import get_usecases

    known = list(get_usecases())
    unknown = [n for n in usecases or [] if n not in known]
    if unknown:
        raise ScreenshotError(f"no use case {', '.join(unknown)}; known: {', '.join(known)}")
    client = configure(settings)
    trained = [n for n in known if describe(client, n).champion is not None]
    if not trained:
        raise ScreenshotError("no use case has a champion here: train first (`shopml run`)")
    if usecases:
        untrained = [n for n in usecases if n not in trained]
        if untrained:
            raise ScreenshotError(
                f"no champion for {', '.join(untrained)} here: train it first (`shopml train`)"
            )
        trained = [n for n in known if n in usecases]
    folder.mkdir(parents=True, exist_ok=True)
    # A one-off admin key, known to this process only: the pages as an admin sees them, and
    # nobody else on the machine can use the short-lived server.
    key = secrets.token_urlsafe(24)
    inner = create_ui_app(settings, auth=Auth([], [key], open_=False))
    saved = []
    with serve(standalone_app(settings, inner=inner)) as url, browser() as b:
        page = b.new_page(
            viewport={"width": WIDTH, "height": HEIGHT},
            extra_http_headers={"Authorization": f"Bearer {key}", "Accept": "text/html"},
        )
        for name, path in [("overview", "/ui/"), *((n, f"/ui/u/{n}") for n in trained)]:
            page.goto(url + path, wait_until="load")
            out = folder / f"{name}.png"
            page.screenshot(path=str(out), full_page=name != "overview")
            saved.append(out)
    return saved
