"""One lifecycle for every stage, so that no run loses an earlier result (docs/lifecycle.md).

    run = begin_stage("label", cfg.output_dir, (cfg,), inputs=[cfg.data, cfg.identifiers_dir],
                      overwrite=cfg.overwrite_output_dir)
    if run is None:                 # finished for this recipe and these inputs: nothing to do
        return
    ...                             # the work; results go to run.output_dir (whole, or in place)
    run.stamp(folder)               # last: stage.json with the recipe hash and the input fingerprints

``begin_stage`` is called after the config has been validated and before anything is written. It
takes an exclusive lock on the output folder (a second run gets a one-line error naming the holder),
refuses a non-empty folder that does not carry this stage's own stamp (or claim), removes the
temporary folders a killed run of the same output left behind, and decides whether there is
anything to do: a stamp with the same recipe hash and the same input fingerprints means no.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from emprl.common.errors import UserError
from emprl.common.io import (
    STAGE_STAMP,
    atomic_write_text,
    inputs_fingerprint,
    read_stage_stamp,
    write_stage_stamp,
)
from emprl.pipeline.config import recipe_hash, strip_format

logger = logging.getLogger("emprl.pipeline.lifecycle")

# Written into a folder a stage fills in place (SFT, PPO) before its stamp exists, so that an
# interrupted run is still recognised as that stage's own.
OWNER_FILE = ".emprl-stage"
STAMP_PREFIX = "stamp:"
_HELD: dict[str, Any] = {}  # lock path -> open file of the locks this process holds


class StageRun:
    """A stage that may write ``output_dir``: it holds the lock until :meth:`release` or exit."""

    def __init__(self, stage: str, output_dir: str, configs: tuple, inputs: dict[str, str], previous: str,
                 lock_path: str | None):
        self.stage, self.output_dir, self.configs, self.inputs = stage, output_dir, configs, inputs
        self.previous = previous  # "none" | "interrupted" | "finished-stale" (recipe or inputs changed)
        self.recipe_hash = recipe_hash(*configs)
        self._lock_path = lock_path

    def stamp(self, folder: str | None = None, **extra: Any) -> None:
        """Mark ``folder`` (default: the output folder) complete: recipe hash, input fingerprints, extras."""
        write_stage_stamp(folder or self.output_dir, self.stage, *self.configs, inputs=self.inputs, **extra)

    def release(self) -> None:
        if self._lock_path:
            _release(self._lock_path)
            self._lock_path = None


def begin_stage(stage: str, output_dir: str, configs: tuple, inputs: Iterable[str | None] = (),
                overwrite: bool = False, in_place: bool = False, main_process: bool | None = None,
                extra_fingerprints: dict[str, str] | None = None) -> StageRun | None:
    """Lock, check ownership, clean up, and say whether the stage has work to do (None: nothing).

    ``inputs``: data files or folders (``format:path`` specs too), upstream stage folders, model
    folders. ``in_place``: the stage writes into ``output_dir`` as it goes (checkpoints) rather than
    replacing it whole at the end; the folder is created and claimed at once."""
    main = _is_main_process() if main_process is None else main_process
    fingerprints = {**fingerprint_inputs(inputs), **(extra_fingerprints or {})}
    check_output_path(output_dir)
    check_owner(stage, output_dir)
    lock_path = acquire_lock(output_dir, stage) if main else None
    try:
        if main:
            remove_stale_temporaries(output_dir)
        stamp = read_stage_stamp(output_dir)
        finished = bool(stamp and stamp.get("complete") and stamp.get("stage") == stage)
        previous = "none"
        if finished:
            changed = changed_inputs(stamp, fingerprints)
            if stamp.get("recipe_hash") == recipe_hash(*configs) and not changed and not overwrite:
                if main:
                    print(f"emprl.{stage}: {output_dir} is complete for this recipe and its inputs; nothing to do "
                          "(--overwrite_output_dir true reruns it)", flush=True)
                _release(lock_path)
                return None
            previous = "finished-stale"
            if main and changed and not overwrite:
                print(f"emprl.{stage}: inputs changed since the last run ({', '.join(changed[:3])}); rerunning",
                      flush=True)
        elif os.path.isdir(output_dir) and os.listdir(output_dir):
            previous = "interrupted"
        if main and in_place:
            os.makedirs(output_dir, exist_ok=True)
            atomic_write_text(os.path.join(output_dir, OWNER_FILE), stage + "\n")
    except BaseException:
        _release(lock_path)
        raise
    return StageRun(stage, output_dir, configs, fingerprints, previous, lock_path)


# -- ownership -------------------------------------------------------------------------------------------


def owner_of(output_dir: str) -> str | None:
    """The stage whose results ``output_dir`` holds (its stamp, else its claim), or None."""
    stamp = read_stage_stamp(output_dir)
    if stamp and stamp.get("stage"):
        return str(stamp["stage"])
    try:
        with open(os.path.join(output_dir, OWNER_FILE), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def check_owner(stage: str, output_dir: str) -> None:
    """Refuse to let ``stage`` replace a folder that is not empty and not its own."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"output_dir: {output_dir} is a file, expected a folder")
    if not os.path.isdir(output_dir):
        return
    entries = sorted(os.listdir(output_dir))
    if not entries:
        return
    owner = owner_of(output_dir)
    if owner == stage:
        return
    if owner:
        raise UserError(f"output_dir: {output_dir} holds the results of the '{owner}' stage; emprl.{stage} "
                        "does not replace them: choose another output_dir")
    raise UserError(f"output_dir: {output_dir} is not empty ({len(entries)} entries, e.g. '{entries[0]}') and "
                    f"carries no {stage} stamp; emprl.{stage} only replaces its own results: choose a new or "
                    "empty output_dir")


# What a stage adds to its folder's name beside it: ".tmp-<name>-XXXXXXXX" (io.atomic_dir), ".<name>.lock".
_NAME_MARGIN = len(".tmp-") + len("-XXXXXXXX") + 2


def check_output_path(output_dir: str) -> None:
    """Before anything is made: every name of ``output_dir`` fits the file system (with the temporary
    names a stage makes beside it) and the folder, or the nearest one above it that exists, is writable."""
    path = os.path.abspath(output_dir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    parts = path.split(os.sep)
    for i, part in enumerate(parts):
        limit = name_max - (_NAME_MARGIN if i == len(parts) - 1 else 0)
        if len(part.encode()) > limit:
            raise UserError(f"output_dir: a folder name of {len(part.encode())} bytes ('{part[:40]}...') is longer "
                            f"than this file system allows ({limit} here); choose a shorter output_dir")
    if len(path.encode()) + _NAME_MARGIN > 4096:
        raise UserError(f"output_dir: the path is {len(path.encode())} bytes long, too long for this file system; "
                        "choose a shorter output_dir")
    # The folder itself when it exists (it is written into), and always its parent (the lock is beside it).
    for folder in dict.fromkeys([existing, os.path.dirname(path) if existing == path else existing]):
        if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"output_dir: {folder} is not writable (read-only file system or no permission); "
                            "choose an output_dir you can write to")


def remove_stale_temporaries(output_dir: str) -> list[str]:
    """Temporary folders of a killed run writing ``output_dir`` (we hold its lock, so no live run
    owns them): siblings made by ``io.atomic_dir`` and partial files/folders inside."""
    parent, name = os.path.split(os.path.abspath(output_dir))
    found = glob.glob(os.path.join(parent, f".tmp-{glob.escape(name)}-*")) + \
        glob.glob(os.path.join(parent, f".old-{glob.escape(name)}-*"))
    if os.path.isdir(output_dir):
        found += [os.path.join(output_dir, n) for n in os.listdir(output_dir)
                  if n.startswith((".tmp-", ".old-")) or n == ".export"]
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    if found:
        logger.warning("removed %d temporary file(s)/folder(s) left by an interrupted run: %s", len(found),
                       ", ".join(os.path.basename(p) for p in found[:3]))
    return found


# -- the lock --------------------------------------------------------------------------------------------


def lock_path_for(output_dir: str) -> str:
    """Beside the folder, not inside it: stages that replace their folder whole keep the lock."""
    parent, name = os.path.split(os.path.abspath(output_dir))
    return os.path.join(parent, f".{name}.lock")


def acquire_lock(output_dir: str, stage: str) -> str:
    """An exclusive ``flock`` (freed by the kernel when the holder dies, so never stale); the file
    names the holder for the error a second run gets, and is removed on release."""
    path = lock_path_for(output_dir)
    _release(path)  # a lock this process kept from an earlier call (tests call main() repeatedly)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(5):
        fh = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"output_dir: {output_dir} is in use by {holder}; wait for it to finish or stop it") \
                from None
        try:  # the holder before us may have removed the file while we opened it: lock the current one
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    else:
        raise UserError(f"output_dir: could not lock {path}; is another run starting on the same folder?")
    fh.seek(0)
    fh.truncate()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fh.write(f"emprl.{stage} (pid {os.getpid()}, since {started})\n")
    fh.flush()
    _HELD[path] = fh
    return path


def _release(path: str | None) -> None:
    fh = _HELD.pop(path, None) if path else None
    if fh is not None:
        with contextlib.suppress(OSError):
            os.remove(path)  # before unlocking: a waiting run then locks a fresh file, never this one
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        _release(path)


# -- fingerprints ------------------------------------------------------------------------------------------


def fingerprint_inputs(paths: Iterable[str | None]) -> dict[str, str]:
    """What a stage read beyond its recipe. An upstream stage folder is identified by its stamp
    (any rerun of that stage changes it); other files and folders by modification time and size."""
    out: dict[str, str] = {}
    for spec in paths:
        if not spec:
            continue
        path = strip_format(str(spec))
        # a stage folder, or a file inside one (ETHREED reads the emotion classifier's label file)
        stamped = path if os.path.isdir(path) else os.path.dirname(path)
        if os.path.isfile(os.path.join(stamped, STAGE_STAMP)):
            with open(os.path.join(stamped, STAGE_STAMP), "rb") as fh:
                out[path] = STAMP_PREFIX + hashlib.sha256(fh.read()).hexdigest()[:16]
        else:
            out.update(inputs_fingerprint([path]))
    return out


def changed_inputs(stamp: dict, current: dict[str, str] | None = None) -> list[str]:
    """The inputs whose fingerprint differs from the one in ``stamp`` (``current``: as computed by
    the stage now; None: recomputed from the paths the stamp lists). A stamp without fingerprints
    cannot vouch for its inputs: reported as changed."""
    recorded = stamp.get("inputs")
    if not isinstance(recorded, dict):
        return ["(no input fingerprints in the stamp)"]
    if current is None:
        current = fingerprint_inputs(recorded)
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


def stamp_is_current(output_dir: str, expected_recipe_hash: str, stage: str | None = None) -> bool:
    """A finished stamp for this recipe whose recorded inputs are unchanged (what ``plan`` asks)."""
    stamp = read_stage_stamp(output_dir)
    if not stamp or not stamp.get("complete") or stamp.get("recipe_hash") != expected_recipe_hash:
        return False
    if stage is not None and stamp.get("stage") != stage:
        return False
    return not changed_inputs(stamp)


# -- checkpoints and model files ---------------------------------------------------------------------------


def newest_intact_checkpoint(checkpoints: list[str], check: Callable[[str], None] | None = None) -> str | None:
    """The newest of ``checkpoints`` (oldest first) whose files load; each one skipped is named with why."""
    check = check or check_folder_files
    for path in reversed(checkpoints):
        try:
            check(path)
            return path
        except Exception as err:  # any damage: a cut file, a bad header, a missing piece
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            logger.warning("resume: skipped %s, it does not load (%s)", path, reason)
            print(f"emprl: resume: skipped {path}: it does not load ({reason})", flush=True)
    return None


def check_folder_files(folder: str) -> None:
    """Raise if a safetensors, torch or JSON file in ``folder`` (not its subfolders) cannot be read."""
    import torch
    from safetensors import safe_open

    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            with safe_open(path, framework="pt") as fh:
                for key in fh.keys():
                    fh.get_tensor(key)
        elif name.endswith(".pt"):  # (transformers' training_args.bin is a pickle by design: not ours to judge)
            torch.load(path, map_location="cpu", weights_only=True)
        elif name.endswith(".json"):
            with open(path, encoding="utf-8") as fh:
                json.load(fh)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"
