"""Screenshots of the web page's two tabs for the docs (docs/app-compare.png, docs/app-rate.png), from the
demo's trained policies after `make train-all`:

    python tools/screenshots.py [--outputs outputs/demo] [--policies t5_sft t5_ppo] [--context 3] [--out docs]

It samples 8 test replies of each policy with `emprl.generate`, exports a blind sheet from them with
`human_eval export` (in a temporary folder), starts `emprl serve` on a free port, compares the policies on
one test context, rates two items as rater "demo", and saves both tabs. Needs chromium (make install).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import page_driver  # noqa: E402


def make_sheet(outputs: str, policies: list[str], work: str) -> str:
    from emprl.app.server import DEMO_CORPUS
    from emprl.generate import main as generate
    from emprl.human_eval.run import main as human_eval

    labelled = os.path.join(outputs, "labelled")
    data = f"disk:{labelled}" if os.path.isdir(labelled) else f"empathetic_dialogues:{DEMO_CORPUS}"
    specs = []
    for name in policies:
        out = os.path.join(work, f"{name}.jsonl")
        generate(["--model", os.path.join(outputs, name), "--data", data, "--split", "test", "--max_examples", "8",
                  "--seed", "0", "--out", out])
        specs.append(f"{name}={out}")
    kit = os.path.join(work, "kit")
    human_eval(["export", "--generations", *specs, "--n", "8", "--seed", "0", "--out", kit])
    return kit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", default="outputs/demo")
    parser.add_argument("--policies", nargs="+", default=["t5_sft", "t5_ppo"])
    parser.add_argument("--context", type=int, default=3, help="which test context to compare on (1-based)")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = tempfile.mkdtemp(prefix="emprl-screenshots-")
    server = None
    try:
        kit = make_sheet(args.outputs, args.policies, work)
        server = page_driver.Server(["--outputs", args.outputs, "--sheet", kit, "--contexts", "50"],
                                    page_driver.free_port(), os.path.join(work, "server.log")).start()
        with sync_playwright() as p:
            browser = page_driver.launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server.url)
            page_driver.compare_context(page, args.context - 1)
            page.wait_for_timeout(500)  # Gradio fades the updated output in
            page.screenshot(path=os.path.join(args.out, "app-compare.png"), full_page=True)
            page_driver.open_rater(page, "demo")
            page_driver.answer_with_keys(page, ("4", "3", "5"))
            page_driver.answer_with_keys(page, ("2", "4", "4"))
            page.keyboard.press("4")  # the third item half answered: empathy 4 chosen, not yet saved
            page.wait_for_timeout(500)
            page.screenshot(path=os.path.join(args.out, "app-rate.png"), full_page=True)
            browser.close()
        print(f"wrote {args.out}/app-compare.png and {args.out}/app-rate.png")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
