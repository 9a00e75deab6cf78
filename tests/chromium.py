"""Headless Chromium for the browser tests (test_browser.py, test_lab.py): Debian's package, driven by Playwright.

Never a downloaded browser build: Playwright is pointed at /usr/bin/chromium (`apt-get install
chromium`; `.ci/run` does it). The flags keep Chromium off the network on its own (no component
updates, no sync, no background requests), and `--no-sandbox` lets it start as root in CI.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, in one line, or None."""
    if not CHROMIUM.exists():
        return f"browser tests skipped: no {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests skipped: Playwright is not installed (pip install -e '.[dev]')"
    return None


def node_modules_reason() -> str | None:
    """Why the exported pages cannot be built (their offline assets are missing), or None."""
    if (ROOT / "site" / "node_modules" / ".installed").exists():  # written by `make site-assets` once npm ci succeeded
        return None
    npm = shutil.which("npm")
    return ("browser tests skipped: site/node_modules is missing; run `make site-assets` (npm ci)"
            + ("" if npm else ", which needs npm"))


def launch(playwright):
    """Debian's Chromium, headless, with a fresh profile (Playwright makes one per launch)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)


@dataclass
class Problems:
    """What went wrong on a page: console errors, uncaught exceptions, failed or forbidden requests."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    server: bool = False

    def watch(self, page, server: bool = False) -> Problems:
        """Record everything on `page` and abort every request that leaves it.

        An exported page may load only files beside it (file:, data:, blob: URLs); with `server` (JupyterLab)
        the page may also talk to this machine's server, websockets included, and to nothing else.
        """
        self.server = server
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url[:120]} ({r.failure})"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))

        def guard(route):
            if allowed(route.request.url, server):
                return route.continue_()
            self.forbidden.append(route.request.url)
            return route.abort()

        page.route("**/*", guard)
        return self

    def check(self) -> None:
        """Fail with everything recorded, if anything was."""
        forbidden = self.forbidden + [u for u in self.requests + self.websockets if not allowed(u, self.server)]
        assert not forbidden, f"the page asked for what is not beside it: {sorted(set(forbidden))[:10]}"
        assert not self.failed, f"requests failed: {self.failed}"
        assert not self.errors, "errors in the browser console:\n" + "\n".join(self.errors)
        assert self.server or not self.websockets, f"the page opened websockets (a kernel?): {self.websockets}"


def allowed(url: str, server: bool = False) -> bool:
    """Whether a page may load `url`: a file beside it, or (server) anything on this machine."""
    parsed = urlparse(url)
    if parsed.scheme in ("file", "data", "blob", "about"):
        return True
    return server and parsed.scheme in ("http", "ws") and parsed.hostname in LOCAL_HOSTS
