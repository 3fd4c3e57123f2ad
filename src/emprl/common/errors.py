"""User-facing errors: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_USER_ERROR = 2
# Faults of the machine rather than of the code: what the user can do about each (docs/lifecycle.md).
_RERUN = "then rerun: the stage continues from its last complete checkpoint"
_WRITE_FAULTS = {
    errno.ENOSPC: f"free space on that disk or choose an output_dir on another one, {_RERUN}",
    errno.EDQUOT: f"free space within your quota or choose an output_dir elsewhere, {_RERUN}",
    errno.EROFS: "the file system is read-only: choose an output_dir on a writable one",
    errno.EACCES: "permission denied: give yourself access to it, or choose an output_dir you can write to",
    errno.ENAMETOOLONG: "a file or folder name is too long for the file system: choose a shorter output_dir",
}


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
        _refuse(err)
    except Exception as err:
        fault = fault_error(err)
        if fault is None:
            raise
        _refuse(fault)


def fault_error(err: BaseException, where: str | None = None) -> UserError | None:
    """A one-line error for a disk that is full or read-only, a missing permission or a name too long
    (``where``: the file or folder, when the error does not name it); None for any other error."""
    code = getattr(err, "errno", None)
    if code not in _WRITE_FAULTS and "(os error 28)" in str(err):  # safetensors' Rust error on a full disk
        code = errno.ENOSPC
    if code not in _WRITE_FAULTS:
        return None
    name = getattr(err, "filename", None) or where or "writing the outputs"
    return UserError(f"{name}: {os.strerror(code)}; {_WRITE_FAULTS[code]}")


def _refuse(err: UserError) -> None:
    sys.stderr.write(f"emprl: error: {err}\n")
    sys.stderr.flush()
    # Under `accelerate launch` other ranks may be waiting in a collective; leave at once.
    os._exit(EXIT_USER_ERROR) if _in_distributed_run() else sys.exit(EXIT_USER_ERROR)


def _in_distributed_run() -> bool:
    from emprl.common.ranks import launched_ranks

    return launched_ranks() > 1
