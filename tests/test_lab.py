"""Chapter 1 in JupyterLab, as a student meets it: `make lab`, open the notebook, Run All, move a slider.

The server is started exactly as the README says (`make lab`, root too, with LAB_ARGS for the port
and token), Chromium opens chapter 1 through the Lab UI and runs every cell in fast mode, then the
live `LatentExplorer` must redraw its decoded image when its z1 slider moves (a kernel round trip).
Autosave is off (a private settings folder), so the chapter file is never rewritten; the test checks
that. Screenshot: build/test-artifacts/lab-01.png.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from chromium import ARTIFACTS, ROOT, Problems, launch, skip_reason

_reason = skip_reason()
if _reason:
    pytest.skip(_reason.replace("browser tests", "JupyterLab test"), allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

CHAPTER = "01_autoencoder.ipynb"
# Private Lab settings: no autosave (Run All must not rewrite the chapter), no news prompt.
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}
ALL_CELLS_RUN = """() => {
  const prompts = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'));
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""
DECODED_PNG = """async area => {
  const img = area.querySelector('img.widget-image');
  const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let s = ''; for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(tmp: Path, port: int, token: str, command: list[str] | None = None) -> subprocess.Popen:
    """`make lab` with a port, a token, no browser, and a private settings and workspaces folder.

    command: another way to start the server, given the LAB_ARGS string (to try the test elsewhere).
    """
    for name, values in SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "BROWSER": "false", "MINILINEAGE_FAST": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    lab_args = f"--no-browser --port={port} --ServerApp.token={token}"
    command = command or ["make", "--no-print-directory", "lab", f"LAB_ARGS={lab_args}"]
    server = subprocess.Popen([*command, *([] if command[0] == "make" else lab_args.split())], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    _stop(server)
    pytest.fail(f"`make lab` never answered on port {port}; it printed:\n{server.stdout.read()}")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def run_all_and_move_the_explorer(notebook: Path, tmp: Path, command: list[str] | None = None) -> None:
    """Open `notebook` (in the folder `make lab` serves) in Lab, Run All, move the explorer's z1 slider."""
    before = hashlib.sha256(notebook.read_bytes()).hexdigest()
    port, token = _free_port(), "minilineage-lab-test"
    server = _start_lab(tmp, port, token, command)
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            problems = Problems().watch(page, server=True)  # the Lab server and the kernel's websocket
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}")
            page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
            # Run All is dropped while the kernel starts: wait for the status bar's "<kernel> | Idle".
            page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=120_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            page.wait_for_function(ALL_CELLS_RUN, timeout=480_000, polling=1000)
            errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, f"a cell failed:\n{errors.first.inner_text()[:2000]}"
            explorer = page.locator(".jp-OutputArea-output:has(.widget-slider:has-text('z1'))").first
            explorer.scroll_into_view_if_needed()
            assert explorer.locator("img.widget-image").count() == 2, "the explorer shows a decoding and a map"
            first = explorer.evaluate(DECODED_PNG)
            explorer.locator(".widget-slider:has-text('z1') .noUi-handle").focus()
            for _ in range(20):  # 20 steps of 0.05: z1 moves by 1.0
                page.keyboard.press("ArrowRight")
            deadline = time.monotonic() + 30  # each move is a kernel round trip: decode, PNG, send
            while explorer.evaluate(DECODED_PNG) == first and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            assert explorer.evaluate(DECODED_PNG) != first, "the decoded image did not change with z1"
            readout = explorer.locator(".widget-slider:has-text('z1') .widget-readout").first.inner_text()
            assert float(readout) == pytest.approx(1.0), f"z1 reads {readout}"
            page.screenshot(path=ARTIFACTS / "lab-01.png")
            explorer.screenshot(path=ARTIFACTS / "lab-01.explorer.png")
            problems.check()
            browser.close()
    finally:
        _stop(server)
    assert hashlib.sha256(notebook.read_bytes()).hexdigest() == before, f"{notebook.name} was rewritten"


def test_chapter1_runs_in_jupyterlab_and_its_latent_explorer_redraws(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    run_all_and_move_the_explorer(ROOT / "chapters" / CHAPTER, tmp_path)
