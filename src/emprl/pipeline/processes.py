"""Stage processes side by side: each starts as soon as the stages it comes after are done.

On a failure no new stage starts; the running ones finish (their outputs are complete then, and
skipped next time) and SystemExit carries the failed stage's code. SIGTERM and SIGINT are forwarded
to the running stages, which save a checkpoint and stop; SystemExit then carries 128 + the signal
(docs/lifecycle.md, "Signals"). With one job a stage writes to
this terminal; otherwise to ``<log_dir>/<recipe stem>.log``, and the CPU threads are split between the
stages that run (a stage that ends up running alone gets every thread).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emprl.common.errors import UserError


@dataclass
class Running:
    proc: subprocess.Popen
    started: float
    log_path: str | None
    log_file: Any


def depends_on(step, other, by_recipe: dict) -> bool:
    return any(r == other.stage.recipe or depends_on(by_recipe[r], other, by_recipe) for r in step.after)


def log_lines(path: str, tail_bytes: int | None = None) -> list[str]:
    """A log's non-blank lines, tqdm's carriage-return redraws split apart; [] if unreadable."""
    try:
        with open(path, "rb") as f:
            if tail_bytes:
                f.seek(max(0, os.path.getsize(path) - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [s.strip() for s in text.replace("\r", "\n").split("\n") if s.strip()]


class StageProcesses:
    """The steps marked ``run`` (``emprl.pipeline.run.Step``), at most ``jobs`` at once."""

    def __init__(self, steps: list, command_for: Callable, jobs: int, log_dir: str | None, cpus: int):
        self.command_for, self.jobs, self.log_dir, self.cpus = command_for, jobs, log_dir, cpus
        self.by_recipe = {s.stage.recipe: s for s in steps}
        self.done = {s.stage.recipe for s in steps if not s.run}
        self.pending = [s for s in steps if s.run]
        self.running: dict[str, Running] = {}
        self.minutes: dict[str, float] = {}
        self.failed: tuple[str, int] | None = None
        self.signalled: int | None = None  # SIGTERM/SIGINT received: forwarded, nothing new starts
        if jobs > 1 and log_dir:
            os.makedirs(log_dir, exist_ok=True)

    def start(self, step) -> None:
        env = dict(os.environ)
        # Alone (nothing running, nothing else startable before it ends): every thread. Otherwise a share.
        alone = not self.running and all(depends_on(p, step, self.by_recipe) for p in self.pending if p is not step)
        if self.jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = self.cpus if alone else max(1, self.cpus // self.jobs)
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        command = self.command_for(step)
        log_path, log_file, threads_note = None, None, ""
        if self.jobs > 1:
            log_path = os.path.join(self.log_dir or ".", os.path.splitext(step.stage.recipe)[0] + ".log")
            log_file = open(log_path, "w")
            threads_note = f", {env.get('OMP_NUM_THREADS', 'default')} thread(s), log {log_path}"
        print(f"\n[train-all] {step.stage.name}: {shlex.join(command)}{threads_note}", flush=True)
        proc = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT if log_file else None)
        self.running[step.stage.recipe] = Running(proc, time.time(), log_path, log_file)

    def start_ready(self) -> None:
        for step in list(self.pending):
            if len(self.running) >= self.jobs:
                break
            if all(r in self.done for r in step.after):
                self.pending.remove(step)
                self.start(step)

    def reap(self) -> None:
        """Record every stage process that has ended."""
        for recipe, run in list(self.running.items()):
            code = run.proc.poll()
            if code is None:
                continue
            del self.running[recipe]
            if run.log_file:
                run.log_file.close()
            name = self.by_recipe[recipe].stage.name
            self.minutes[name] = (time.time() - run.started) / 60
            if code == 0:
                self.done.add(recipe)
                print(f"[train-all] {name}: done in {self.minutes[name]:.1f} min", flush=True)
            elif self.signalled and code == 128 + self.signalled:
                print(f"[train-all] {name}: stopped after saving a checkpoint (exit {code})", file=sys.stderr,
                      flush=True)
            else:
                self.report_failure(name, code, run.log_path)

    def report_failure(self, name: str, code: int, log_path: str | None) -> None:
        print(f"[train-all] {name} failed (exit {code})", file=sys.stderr, flush=True)
        if log_path:
            lines = log_lines(log_path)
            # Our one-line error first: accelerate's launcher adds its own traceback after it.
            ours = [s for s in lines if s.startswith("emprl: error:")]
            print("\n".join(f"    {s}" for s in ours + lines[-15:]) + f"\n    (whole log: {log_path})", file=sys.stderr)
        self.failed = self.failed or (name, code)
        if self.running:
            print(f"[train-all] letting {', '.join(self.by_recipe[r].stage.name for r in self.running)} finish; "
                  "no new stage starts", file=sys.stderr, flush=True)

    def heartbeat(self) -> None:
        for recipe, run in self.running.items():
            print(f"[train-all]   {self.by_recipe[recipe].stage.name} ({(time.time() - run.started) / 60:.1f} min): "
                  f"{(log_lines(run.log_path, 4096) or [''])[-1][:110]}", flush=True)

    def forward(self, signum, frame=None) -> None:
        """A signal to train-all goes on to the running stages: they save, then stop (a second one
        stops them at once); no new stage starts."""
        if self.signalled is None:
            self.signalled = signum
            print(f"\n[train-all] {signal.Signals(signum).name}: the running stages save a checkpoint and stop; "
                  "no new stage starts", file=sys.stderr, flush=True)
        for run in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(signum)


def run_steps(steps: list, command_for: Callable, jobs: int = 1, log_dir: str | None = None,
              cpus: int | None = None, heartbeat_s: float = 60.0, poll_s: float = 0.5) -> dict[str, float]:
    """Run the steps marked ``run``; ``command_for(step)`` gives the argv. Returns minutes per stage."""
    procs = StageProcesses(steps, command_for, jobs, log_dir, cpus or len(os.sched_getaffinity(0)))
    last_beat = time.time()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, procs.forward) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        while procs.pending or procs.running:
            if procs.failed is None and procs.signalled is None:
                procs.start_ready()
            if not procs.running:
                if procs.pending and procs.failed is None and procs.signalled is None:  # an acyclic list: never
                    raise UserError(f"stages {[s.stage.name for s in procs.pending]} wait for stages that never run")
                break
            time.sleep(poll_s)
            procs.reap()
            if jobs > 1 and procs.running and time.time() - last_beat >= heartbeat_s:
                last_beat = time.time()
                procs.heartbeat()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if procs.signalled:
        print("[train-all] interrupted; finished stages are kept and skipped next time, a stopped one continues "
              "from its checkpoint: rerun the same command", file=sys.stderr, flush=True)
        raise SystemExit(128 + procs.signalled)
    if procs.failed:
        print(f"[train-all] {procs.failed[0]} failed; fix it and rerun: finished stages are skipped", file=sys.stderr)
        raise SystemExit(procs.failed[1])
    return procs.minutes
