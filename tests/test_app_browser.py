"""The web page in a real browser (headless Chromium driven by Playwright, tools/page_driver.py), on tiny
models: compare two policies, rate, kill -9 the server, restart, resume; then `human_eval score` on the
answers the page saved. Marker `browser`; CI installs chromium (`make install`) and runs them in `make test`."""

from __future__ import annotations

import os
import shutil

import app_world
import page_driver
import pytest

from emprl.human_eval.answers import read_log
from emprl.human_eval.run import score

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if page_driver.chromium_path() is None:
    if os.environ.get("CI"):  # CI must run them: a missing browser fails there instead of skipping
        pytest.fail("no chromium: `make install` installs Debian's chromium", pytrace=False)
    pytest.skip("no chromium here (make install installs Debian's chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return app_world.make_world(tmp_path_factory.mktemp("page"))


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = page_driver.launch(p)
        yield chromium
        chromium.close()


def test_compare_rate_kill_restart_resume_and_score(world, browser, tmp_path):
    kit = str(tmp_path / "kit")
    shutil.copytree(world["sheet"], kit)
    args = ["--outputs", world["root"], "--policies", world["t5_sft"], "--sheet", kit, "--contexts", "20"]
    server = page_driver.Server(args, page_driver.free_port(), str(tmp_path / "server.log")).start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(server.url)
        # Compare: the two ticked policies (t5_sft, t5_ppo) answer test context 1, each graded.
        replies = page_driver.compare_context(page, 0)
        columns = page.locator("#cmp-out .cmp-col")
        assert len(replies) == 2 and columns.count() == 2
        for i in range(2):
            text = columns.nth(i).inner_text()
            assert "identifiers: ER" in text and "R_emp vs the reference's gold" in text and "seed 42" in text
        assert "Reference:" in page.inner_text("#cmp-out")
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        page.click("#cmp-again")  # the same context, the next seed
        page.wait_for_function("() => document.getElementById('cmp-out').innerText.includes('seed 43')")
        page.fill("#cmp-message textarea", "it was my best friend")  # a second turn, each policy its own
        page.click("#cmp-send")
        page.wait_for_function("() => document.querySelectorAll('#cmp-out .cmp-you').length === 2")
        page_driver.wait_idle(page)
        assert page.locator("#cmp-out .cmp-reply").count() == 4
        assert page.inner_text("#cmp-out").count("R_emp") == 2  # only the replies to the test context have one
        page.fill("#cmp-extra textarea", world["identifiers"])  # not a policy: said on the page
        page.click("#cmp-send")
        page.wait_for_function("() => document.getElementById('cmp-status').innerText.includes('not a dialogue')")

        # Rate: a folder that is no sheet is named on the page; then three items, the first by clicking,
        # then by keys; back shows the saved answer.
        page_driver.open_rater(page, "ann", sheet=str(tmp_path))
        assert "no ratings.csv or ab.csv" in page.inner_text("#rate-status")
        page_driver.open_rater(page, "ann", sheet=kit)
        total = len(read_sheet_items(kit))
        assert page_driver.progress(page) == f"1 / {total}"
        for aspect, value in zip(("empathy", "relevance", "fluency"), app_world.ANSWERS[0]):
            page.locator(f"#rate-{aspect} input[value='{value}']").click()
        page.click("#rate-save")
        page.wait_for_function("() => document.getElementById('rate-progress-text').innerText.startsWith('2 /')")
        page_driver.answer_with_keys(page, app_world.ANSWERS[1])
        page_driver.answer_with_keys(page, app_world.ANSWERS[2])
        assert page_driver.progress(page) == f"4 / {total}"
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("() => document.getElementById('rate-progress-text').innerText.startsWith('3 /')")
        assert [page_driver.checked(page, f"rate-{a}") for a in ("empathy", "relevance", "fluency")] == \
            list(app_world.ANSWERS[2])
        page.screenshot(path=str(tmp_path / "rate.png"), full_page=True)

        # kill -9, restart: the three answers are on disk and the page resumes at item 4.
        server.kill()
        log = os.path.join(kit, "answers", "ann.jsonl")
        assert [row["item_id"] for _, row in read_log(log)[1]] == ["R0001", "R0002", "R0003"]
        server.start()
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server.url)
        page_driver.open_rater(page, "ann")
        assert page_driver.progress(page) == f"4 / {total}"
        assert "Resumed: 3 of" in page.inner_text("#rate-status")

        # A second tab as the same rater takes over; the first one's save is refused, nothing written.
        other = browser.new_page()
        other.goto(server.url)
        page_driver.open_rater(other, "ann")
        assert "also open in another tab" in other.inner_text("#rate-status")
        page.locator("#rate-progress").click()
        for key in app_world.ANSWERS[0]:
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.getElementById('rate-status').innerText.includes('another tab')")
        assert page_driver.progress(page) == f"4 / {total}" and len(read_log(log)[1]) == 3

        # The rest in the other tab, then `score` on the log.
        while not other.locator("#rate-done").count():
            page_driver.answer_with_keys(other, "win" if page_driver.current_kind(other) == "ab" else ("3", "4", "5"))
        report = score(os.path.join(kit, "key.json"), [log], [log], str(tmp_path / "report.md"))
        first = report["systems"][0]
        assert report["ratings"][first]["empathy"]["mean"] > 0 and set(report["ab"]) == set(report["systems"][1:])
        host = server.url.rstrip("/")
        assert [u for u in requests if not u.startswith((host, "data:", "blob:"))] == []  # no network
    finally:
        server.stop()


def read_sheet_items(kit: str) -> list:
    from emprl.app.rating import load_sheet

    return load_sheet(kit).items
