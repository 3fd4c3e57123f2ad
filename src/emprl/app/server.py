"""``emprl serve`` / ``python -m emprl.app``: the local web page to compare policies and to rate replies
blind (docs/app.md). Gradio, bound to 127.0.0.1 by default, no network (no analytics, no web fonts).

    emprl serve                                   # outputs/demo: its policies, identifiers, labelled test split
    emprl serve --sheet outputs/demo/human_eval   # a sheet written by `python -m emprl.human_eval export`
    emprl serve --policies outputs/demo/t5_sft outputs/demo/t5_ppo --port 7861
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.resources
import io
import logging
import os
import re
import socket

from emprl.common.errors import UserError, run_cli

logger = logging.getLogger("emprl.app")

DEMO_CORPUS = str(importlib.resources.files("emprl") / "demo_data" / "empathetic_dialogues_large")
PHRASE_BANK = "judge_phrases.json"


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="emprl serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--outputs", default="outputs/demo", help="where the policies, identifiers and labels are")
    p.add_argument("--policies", nargs="*", default=[], help="more stage output folders to offer")
    p.add_argument("--identifiers", default=None, help="identifiers folder (default: OUTPUTS/identifiers)")
    p.add_argument("--data", default=None, help="FORMAT:PATH of the test contexts (default: disk:OUTPUTS/labelled, "
                   "else the bundled demo corpus)")
    p.add_argument("--oracle", default=None, help="phrase bank of the oracle (default: the data's judge_phrases.json)")
    p.add_argument("--contexts", type=int, default=200, help="how many test contexts to list")
    p.add_argument("--sheet", default=None, help="rating sheet to open (export folder, ratings.csv or ab.csv)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def check_port(host: str, port: int) -> None:
    """A UserError when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the server binds: a port left in TIME_WAIT by a killed server is free, one listened on is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: {host}:{port} is in use (another `emprl serve`?); "
                                "choose another with --port") from None
            raise UserError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None


def data_spec(args) -> str:
    if args.data:
        return args.data
    labelled = os.path.join(args.outputs, "labelled")
    return f"disk:{labelled}" if os.path.isdir(labelled) else f"empathetic_dialogues:{DEMO_CORPUS}"


def source_folder(spec: str) -> str | None:
    """The EmpatheticDialogues-format folder ``spec`` comes from (a labelled folder: the data it labelled,
    as the evaluation finds it), or None."""
    from emprl.evaluate.run import source_spec

    fmt, _, path = spec.partition(":")
    if fmt == "disk":
        fmt, _, path = (source_spec(path) or "").partition(":")
    return path if fmt == "empathetic_dialogues" else None


def load_graders(args, spec: str):
    from emprl.app.compare import Graders
    from emprl.evaluate.judges import IdentifiersJudge, PhraseBankJudge

    folder = args.identifiers or os.path.join(args.outputs, "identifiers")
    if args.identifiers and not os.path.isdir(folder):
        raise UserError(f"--identifiers: folder '{folder}' does not exist")
    identifiers = IdentifiersJudge(folder, device=args.device) if os.path.isdir(folder) else None
    oracle = args.oracle
    if oracle is None and source_folder(spec):
        candidate = os.path.join(source_folder(spec), PHRASE_BANK)
        oracle = candidate if os.path.isfile(candidate) else None
    return Graders(identifiers, PhraseBankJudge(oracle) if oracle else None)


def build(args):
    """The Gradio app (not yet launched) for ``args``."""
    import gradio as gr

    from emprl.app.compare import Comparer, check_policy_folder, find_policies, load_test_contexts
    from emprl.app.rating import Owners, load_sheet
    from emprl.app.ui_compare import CSS, build_compare_tab
    from emprl.app.ui_rate import KEYS_JS, build_rate_tab

    for folder in args.policies:
        check_policy_folder(folder)
    if args.sheet:
        load_sheet(args.sheet)  # a bad sheet: one line now, not a page that cannot open it
    policies = list(dict.fromkeys(find_policies(args.outputs) + list(args.policies)))
    spec = data_spec(args)
    contexts = load_test_contexts(spec, args.contexts)
    graders = load_graders(args, spec)
    comparer = Comparer(graders, device=args.device)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts
    with gr.Blocks(title="EmpRL", theme=theme, css=CSS, head=KEYS_JS, analytics_enabled=False) as app:
        gr.Markdown(f"# EmpRL\nPolicies from `{args.outputs}`; test contexts from `{spec}`; "
                    f"identifiers: {'yes' if graders.identifiers else 'none found (no levels, no R_emp)'}; "
                    f"oracle: {'yes' if graders.oracle else 'none'}.")
        with gr.Tab("Compare", elem_id="tab-compare"):
            build_compare_tab(comparer, policies, contexts)
        with gr.Tab("Rate", elem_id="tab-rate"):
            build_rate_tab(args.sheet, Owners())
    return app


# Gradio's page names a script on a CDN (an iframe resizer for embedding) and preconnects to web fonts:
# requests that leave the machine. The page works without them, so they are taken out of every HTML page.
EXTERNAL_TAGS = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>"
                           r"|<link[^>]*\bhref=\"https?://[^\"]*\"[^>]*>", re.S)


def offline_app(blocks):
    """A FastAPI app serving ``blocks`` at / (``gr.mount_gradio_app``), its HTML without external tags."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import Response

    async def strip_external(request, call_next):
        response = await call_next(request)
        if not response.headers.get("content-type", "").startswith("text/html"):
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(EXTERNAL_TAGS.sub("", body.decode("utf-8")), status_code=response.status_code,
                        headers=headers)

    app = FastAPI()
    app.add_middleware(BaseHTTPMiddleware, dispatch=strip_external)
    with contextlib.redirect_stdout(io.StringIO()):  # gradio 5.50 prints "new <path>" here
        return gr.mount_gradio_app(app, blocks.queue(default_concurrency_limit=4), path="", show_api=False,
                                   ssr_mode=False)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own requests to itself
    check_port(args.host, args.port)
    app = build(args)
    check_port(args.host, args.port)  # again: loading took a while
    import uvicorn

    print(f"EmpRL page on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    uvicorn.run(offline_app(app), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_cli(main)
