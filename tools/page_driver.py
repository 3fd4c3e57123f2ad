"""Drive the web page (`emprl serve`, docs/app.md) in headless Chromium: start and stop the server, compare,
rate. Used by the browser tests (tests/test_app_browser.py) and by tools/screenshots.py.

Playwright drives the system's Chromium (Debian's `chromium`, which `make install` installs where
missing); Playwright's own browser download is not used. A checkout tool, not part of the package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

# No background traffic: the machines this runs on have no network but the package registries.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
                 # a test drives two tabs: a background tab's timers must not be throttled
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m emprl.app ARGS --port PORT`` in a child process; ``kill()`` is kill -9."""

    def __init__(self, args: list[str], port: int, log: str):
        self.args, self.port, self.log = args, port, log
        self.url = f"http://127.0.0.1:{port}/"
        self.proc: subprocess.Popen | None = None

    def start(self, deadline_s: float = 300) -> Server:
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        with open(self.log, "a", encoding="utf-8") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "emprl.app", *self.args, "--port", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + deadline_s  # a bound on waiting for it to come up, not a timing check
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emprl serve exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"emprl serve did not answer at {self.url}: {self.tail()}")

    def tail(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as fh:
            return fh.read()[-2000:]

    def kill(self) -> None:
        """kill -9, as a crash would: nothing is flushed or closed by the server."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def launch(playwright):
    """Headless Chromium with a fresh profile (Playwright makes a new one per launch)."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium found: `make install` installs Debian's chromium")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)


def wait_idle(page) -> None:
    """Until Gradio shows no pending output (a generation or a save in flight)."""
    page.wait_for_function("() => !document.querySelector('.pending, .generating')", timeout=120_000)


def compare_context(page, index: int) -> list[str]:
    """Pick test context ``index`` (0-based) in the Compare tab; the replies, one per policy column."""
    page.click("#tab-compare-button")
    page.click("#cmp-context input")
    page.locator("ul[role=listbox] li").nth(index).click()
    page.wait_for_selector("#cmp-out .cmp-col .cmp-reply", timeout=120_000)
    wait_idle(page)
    return page.locator("#cmp-out .cmp-col .cmp-reply").all_inner_texts()


def open_rater(page, name: str, sheet: str | None = None) -> None:
    page.click("#tab-rate-button")
    if sheet is not None:
        page.fill("#rate-sheet textarea", sheet)
    page.fill("#rate-rater textarea", name)
    before = page.inner_text("#rate-status")
    page.click("#rate-open")
    # Every Open says something new: where the answers go, what was resumed, or what is wrong (⚠).
    page.wait_for_function("(before) => document.getElementById('rate-status').innerText.trim() !== before.trim()",
                           arg=before, timeout=60_000)
    wait_idle(page)


def progress(page) -> str:
    text = page.locator("#rate-progress-text")
    return text.inner_text() if text.count() else ""


def current_kind(page) -> str:
    return "ab" if page.locator("#rate-choice").is_visible() else "ratings"


def answer_with_keys(page, values) -> None:
    """Answer the shown item from the keyboard: ("4", "3", "5") or "win" / "tie" / "lose"; then Enter."""
    page.bring_to_front()  # keys go to the tab in front; the test switches tabs
    before = progress(page)
    page.locator("#rate-progress").click()  # focus the page, not a text box
    if isinstance(values, str):
        page.keyboard.press({"win": "a", "tie": "t", "lose": "b"}[values])
    else:
        for value in values:
            page.keyboard.press(value)
    page.keyboard.press("Enter")
    page.wait_for_function("(before) => { const p = document.getElementById('rate-progress-text');"
                           " return document.getElementById('rate-done') || (p && p.innerText !== before); }",
                           arg=before, timeout=60_000)
    wait_idle(page)


def checked(page, elem_id: str) -> str | None:
    """The value of the checked radio of ``elem_id`` (e.g. rate-empathy), or None."""
    box = page.locator(f"#{elem_id} input:checked")
    return box.get_attribute("value") if box.count() else None
