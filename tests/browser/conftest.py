"""Browser tests (issue 14): Playwright from PyPI driving Debian's Chromium (`/usr/bin/chromium`,
launched by path: no browser is downloaded) against a real server (uvicorn on a free port) on the
suite's own database (SQLite, or PostgreSQL with NHR_TEST_DATABASE_URL) and keyring.

One server and one browser for the whole directory (package scope). Each page gets a context that records every
request leaving the server's origin (and blocks it), every console error and page error. Without
Chromium the tests skip with how to install it, unless NHR_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from live_server import serving

CHROMIUM = os.environ.get("NHR_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).resolve().parents[1] / "data" / "axe" / "axe.min.js"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` (Debian) or set NHR_CHROMIUM"
        if os.environ.get("NHR_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="package")
def server(runtime, chromium_path, tmp_path_factory) -> str:
    """uvicorn serving `api.main:app` on the suite's database and keyring (tests/live_server.py); its base URL."""
    with serving(runtime, tmp_path_factory.mktemp("server") / "uvicorn.log") as base:
        yield base.replace("127.0.0.1", "localhost")  # localhost: a secure context, so the __Host- Secure cookies work over http


@pytest.fixture(scope="package")
def browser(chromium_path):
    """One browser for the directory; closed when it is done, so that Playwright's event loop does
    not outlive it into the tests that run their own (asyncio.run)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


class Watched:
    """A page with what it did wrong: requests to other origins, console errors, page errors."""

    def __init__(self, context, base: str):
        self.context, self.base = context, base
        self.foreign: list[str] = []
        self.errors: list[str] = []
        context.route("**/*", self._route)
        self.page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base + "/") or url == self.base:
            route.continue_()
        else:
            self.foreign.append(url.split("?")[0])
            route.abort()

    def axe_serious(self) -> list[dict]:
        """axe-core's violations of serious or critical impact on the current page."""
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            self.page.evaluate(AXE.read_text() + "\n;undefined")  # evaluated by the driver, not an inline <script>
        result = self.page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
                for v in result["violations"] if v["impact"] in ("serious", "critical")]

    def assert_clean(self) -> None:
        assert not self.foreign, f"requests left the server's origin: {self.foreign}"
        assert not self.errors, self.errors
        assert self.axe_serious() == []

    def shot(self, directory: Path, name: str) -> Path:
        """A full-page screenshot under `directory`; also under NHR_SCREENSHOT_DIR when set (the
        README's pictures in docs/screenshots/ are made by this same call)."""
        path = directory / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        extra = os.environ.get("NHR_SCREENSHOT_DIR")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / path.name)
        return path


@pytest.fixture
def watched(browser, server):
    opened = []

    def open_(*, width: int = 1024, height: int = 800, lang: str = "en") -> Watched:
        ctx = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB" if lang == "en" else "ur-PK")
        opened.append(ctx)
        return Watched(ctx, server)

    yield open_
    for ctx in opened:
        ctx.close()
