"""User-facing errors: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input (recipe, data file, path), reported as a single line."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a stage's ``main`` and turn a :class:`UserError` into one stderr line and exit code 2."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except UserError as err:
        sys.stderr.write(f"emprl: error: {err}\n")
        sys.stderr.flush()
        # Under `accelerate launch` other ranks may be waiting in a collective; leave at once.
        os._exit(EXIT_USER_ERROR) if _in_distributed_run() else sys.exit(EXIT_USER_ERROR)


def _in_distributed_run() -> bool:
    from emprl.common.ranks import launched_ranks

    return launched_ranks() > 1
