"""Process identity that survives PID reuse, and liveness that sees through zombies.

PID 1 on some machines (containers, minimal VMs) does not reap orphans, so a dead daemon can
linger as a zombie for which `kill(pid, 0)` still succeeds. A process is therefore identified
by (pid, start time) and counted alive only if it exists, is not a zombie, and started when
we recorded it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may hold spaces and parentheses; everything after the last ')' is fixed-format.
    rest = data[data.rfind(")") + 2:].split()
    return rest


@dataclass(frozen=True)
class ProcRef:
    pid: int
    start: int  # clock ticks since boot, field 22 of /proc/PID/stat

    @classmethod
    def of(cls, pid: int) -> ProcRef | None:
        fields = _stat_fields(pid)
        if fields is None:
            return None
        return cls(pid, int(fields[19]))

    @classmethod
    def from_json(cls, data: Any) -> ProcRef | None:
        if isinstance(data, dict) and isinstance(data.get("pid"), int) \
                and isinstance(data.get("start"), int):
            return cls(data["pid"], data["start"])
        return None

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    def alive(self) -> bool:
        fields = _stat_fields(self.pid)
        return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == self.start

    def signal(self, sig: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def stop(self, *, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns once it is dead (or a zombie)."""
        if not self.signal(signal.SIGTERM):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.alive():
                return
            time.sleep(0.01)
        self.signal(signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.005)


def stop_all(refs: Sequence[ProcRef], grace: float) -> None:
    """SIGTERM to all at once, SIGKILL to what is left after `grace` seconds (Podman's stop,
    for many processes: one grace period in all, not one each)."""
    for r in refs:
        r.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(r.alive() for r in refs) and time.monotonic() < deadline:
        time.sleep(0.01)
    for r in refs:
        if r.alive():
            r.kill()


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []
