"""`burrow run`: create a sandbox, run one command in it in the foreground, and with `--rm`
remove the sandbox when the command ends, also on Ctrl-C or SIGTERM. The command's exit code is
burrow's (128+N when a signal N ended it); burrow's own failures exit 125, as `podman run`.

The command inherits burrow's stdin, stdout, stderr and terminal. Ctrl-C at a terminal reaches
the command directly (it is in burrow's foreground process group); burrow waits for it, then
cleans up. A signal sent to burrow alone (SIGTERM from a CI runner, SIGINT/SIGHUP by kill) is
passed on to everything running in the sandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from netns.errors import BurrowError
from rootless import sandbox
from rootless.backend import World
from rootless.ports.spec import PortSpec
from rootless.store import Store

RUN_ERROR = 125  # podman run's "the error is with podman itself"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class Interrupted(BaseException):
    """A signal arrived before the command was started: unwind (undoing a half-made sandbox)."""

    def __init__(self, sig: int) -> None:
        super().__init__(sig)
        self.sig = sig


def _terminal_sent_to_all() -> bool:
    """Whether a keyboard signal from our terminal also reached the command (same foreground
    process group), so passing it on would deliver it twice."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return True
        except OSError:
            continue
    return False


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def _foreground(w: World, name: str, argv: Sequence[str]) -> int:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    sys.stdout.flush()
    proc = subprocess.Popen(list(argv), env=env)

    def forward(sig: int, _frame: FrameType | None) -> None:
        if sig in (signal.SIGINT, signal.SIGQUIT) and _terminal_sent_to_all():
            return
        for pid in {proc.pid, *sandbox.sandbox_pids(w, name)}:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    for s in FORWARDED:
        signal.signal(s, forward)
    return _exit_code(proc.wait())


def run(w: World, name: str, attaches: Sequence[sandbox.Attach], ports: Sequence[PortSpec],
        dns: Sequence[str], cmd: Sequence[str], *, rm: bool) -> int:
    if not cmd:
        raise BurrowError("no command given: burrow run [OPTIONS] NAME -- CMD [ARGS...]",
                          exit_code=RUN_ERROR)

    def interrupted(sig: int, _frame: FrameType | None) -> None:
        raise Interrupted(sig)

    # What was there before: a world this run starts, and a sandbox it makes, are its to
    # remove; a name already taken is someone else's sandbox (create refuses it).
    world_was_up = w.current() is not None
    taken = Store(w.paths).exists(name)
    made = False
    try:
        for s in FORWARDED:  # inside the try: a signal from the first one on is ours to handle
            signal.signal(s, interrupted)
        try:
            sandbox.create(w, name, attaches, ports, dns, w.network_mtu)
        except BurrowError as e:
            raise BurrowError(str(e), exit_code=RUN_ERROR) from e
        made = True
        return _foreground(w, name, sandbox.exec_argv(w, name, cmd))
    except Interrupted as e:
        return 128 + e.sig
    finally:
        for s in FORWARDED:  # cleanup is not interrupted half-way by a second signal
            signal.signal(s, signal.SIG_IGN)
        if not taken and (rm or not made):
            _clean_up(w, name, world_was_up, remove_sandbox=rm)


def _clean_up(w: World, name: str, world_was_up: bool, *, remove_sandbox: bool) -> None:
    """After the command (or a signal, or a failure half-way): with --rm the sandbox goes, and
    with it the world when it was the last; a world this run started for a sandbox it never
    made (a signal or a failure during create) goes too. A failure here is printed, and the
    exit code stays the command's (as `podman run --rm`, which logs a failed removal)."""
    try:
        store = Store(w.paths)
        if remove_sandbox and store.exists(name):
            sandbox.remove(w, name)  # stops what still runs in it first
        elif not world_was_up and not store.sandboxes() and w.current() is not None:
            w.teardown()
    except (BurrowError, OSError) as e:
        print(f"Error: remove sandbox {name}: {e}", file=sys.stderr)
