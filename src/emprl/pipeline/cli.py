"""The ``emprl`` command: run a stage under ``accelerate launch`` without losing our error.

    emprl launch [--config_file recipes/accelerate/cpu.yaml] [accelerate options] <stage> <recipe.yaml> [--key value ...]
    emprl stages                                  # the stage names and their modules
    emprl serve [...]                             # the web page (emprl.app.server, docs/app.md)

The recipe is parsed and range-checked here first, so a mistake is one line and exit code 2 before
any process starts. Then accelerate's launcher runs ``-m <module> <recipe> ...``; when the stage
fails, its exit code (2 for a user error, whose one line it has printed; 143/130 after SIGTERM/SIGINT,
which this process forwards to the stage) becomes ours, without the launcher's ``CalledProcessError``
traceback on top (docs/lifecycle.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

from emprl.common.errors import EXIT_USER_ERROR, UserError, run_cli
from emprl.pipeline import stages

USAGE = ("usage: emprl launch [--config_file ACCELERATE.yaml] [accelerate options] STAGE RECIPE.yaml [--key value ...]\n"
         "       emprl stages\n"
         "       emprl serve [--outputs outputs/demo] [--sheet DIR] [--port 7860]   (the web page, docs/app.md)\n"
         "STAGE: one of {}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.format(", ".join(stages.kinds())))
        return
    command, rest = argv[0], argv[1:]
    if command == "stages":
        for name, kind in stages.kinds().items():
            print(f"{name:<20} python -m {kind.module}")
        return
    if command == "serve":
        from emprl.app.server import main as serve

        serve(rest)
        return
    if command != "launch":
        raise UserError(f"unknown command {command!r}; expected 'launch', 'stages' or 'serve' (emprl --help)")
    options, rest = _launcher_options(rest)
    if len(rest) < 2:
        raise UserError("emprl launch: expected a stage and a recipe file (emprl --help)")
    stage, stage_args = rest[0], rest[1:]
    if stage not in stages.kinds():
        raise UserError(f"emprl launch: unknown stage {stage!r}; expected one of {', '.join(stages.kinds())}")
    validate(stage, stage_args)
    if not any(o == "--config_file" or o.startswith("--config_file=") for o in options):
        default = default_accelerate_config()
        options = ["--config_file", default, *options] if default else options
    sys.exit(launch(stages.kinds()[stage].module, stage_args, options))


def validate(stage: str, stage_args: list[str]) -> None:
    """Parse the recipe as the stage will (unknown keys, types, ranges, paths), in this process."""
    from emprl.pipeline.config import parse_recipe

    parse_recipe(stages.kinds()[stage].config_classes(), stage_args)


def launch(module: str, stage_args: list[str], options: list[str]) -> int:
    """accelerate's own launcher, in this process; returns the stage's exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    for i, option in enumerate(options):
        config_file = options[i + 1] if option == "--config_file" and i + 1 < len(options) else \
            option.partition("=")[2] if option.startswith("--config_file=") else None
        if config_file is not None and not os.path.isfile(config_file):
            raise UserError(f"--config_file: {config_file} does not exist")
    try:
        args = launch_command_parser().parse_args([*options, "-m", module, *stage_args])
    except SystemExit as err:  # argparse has printed its one-line usage error
        raise SystemExit(EXIT_USER_ERROR if err.code else 0) from None
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            launch_command(args)
        except BaseException as err:  # handed to the main thread
            outcome["error"] = err

    # accelerate's launcher runs in a thread, so that its own handlers (which give a stage 5 s, then kill
    # it) stay out; this thread forwards SIGTERM/SIGINT to the stage processes and waits for them to save.
    worker = threading.Thread(target=run, name="accelerate-launch", daemon=True)
    with forward_signals():
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    err = outcome.get("error")
    if err is None:
        return 0
    if isinstance(err, subprocess.CalledProcessError):  # one process: the child's code, its message shown
        return signal_code(err.returncode)
    failures = getattr(err, "failures", None)  # torch's elastic launcher (several processes)
    if not failures:
        raise err
    codes = [signal_code(getattr(f, "exitcode", 1)) for f in failures.values()]
    return EXIT_USER_ERROR if EXIT_USER_ERROR in codes else (codes[0] or 1)


def signal_code(returncode: int) -> int:
    """A child killed by signal N reports -N; the shell's code for it is 128 + N (not 256 - N)."""
    return 128 - returncode if returncode < 0 else returncode


@contextlib.contextmanager
def forward_signals():
    """While launching: SIGTERM and SIGINT go on to every process this one started (the stages save
    and exit 143/130, docs/lifecycle.md "Signals"), instead of stopping this one."""
    import psutil

    def forward(signum, frame):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_accelerate_config() -> str | None:
    """The repository's config for this machine (one GPU, else the CPU), when run from its root."""
    try:
        import torch

        name = "single_gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:
        name = "cpu"
    path = os.path.join("recipes", "accelerate", f"{name}.yaml")
    return path if os.path.isfile(path) else None


def _launcher_options(args: list[str]) -> tuple[list[str], list[str]]:
    """Split ``[accelerate options] STAGE ...``: an option takes the next word as its value unless it
    is written ``--opt=value`` or the next word is an option or a stage name (a flag)."""
    options, i = [], 0
    while i < len(args) and args[i].startswith("-"):
        options.append(args[i])
        takes_value = "=" not in args[i] and i + 1 < len(args) and not args[i + 1].startswith("-") \
            and args[i + 1] not in stages.kinds()
        if takes_value:
            options.append(args[i + 1])
        i += 2 if takes_value else 1
    return options, args[i:]


def entry_point() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry_point()
