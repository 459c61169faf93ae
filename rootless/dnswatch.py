"""burrow-dns as a watched daemon: does some network need it, is it alive, start it again.

The engine starts burrow-dns with the first DNS-enabled network and only then; if it dies in
between, nothing would notice. Both worlds use this to report it and to bring it back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from netns import locks, statefiles
from rootless.backend import Runtime
from rootless.engine_call import bin_path
from rootless.paths import StatePaths

DNS_PORT = "53"  # the engine's default (NETAVARK_DNS_PORT unset), which burrow never sets


def config_dir(paths: StatePaths) -> Path:
    return paths.netavark_config / statefiles.AARDVARK_DIR


def recorded_pid(paths: StatePaths) -> int | None:
    try:
        return int((config_dir(paths) / statefiles.AARDVARK_PID).read_text().strip())
    except (OSError, ValueError):
        return None


def serves(paths: StatePaths) -> bool:
    """Whether the engine has DNS records for some network (then burrow-dns must run)."""
    try:
        return any(f.is_file() and f.name != statefiles.AARDVARK_PID
                   and not f.name.startswith(".") for f in config_dir(paths).iterdir())
    except OSError:
        return False


def alive_in(proc_root: str, pid: int | None) -> bool:
    """A live burrow-dns with `pid` in the procfs at `proc_root` (no zombie, no reused pid)."""
    if pid is None:
        return False
    try:
        with open(f"{proc_root}/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            is_dns = b"dns" in f.read()
    except (OSError, IndexError):
        return False
    return is_dns and state not in ("Z", "X")


def problem(paths: StatePaths, alive: bool) -> list[str]:
    if alive or not serves(paths):
        return []
    return ["burrow-dns died: sandboxes cannot resolve names; run `burrow up` to restart it"]


def restart(rt: Runtime, alive: Callable[[], bool]) -> list[str]:
    """Start burrow-dns in the world if a network needs it and it is not running."""
    if not serves(rt.paths) or alive():
        return []
    # The engine's own lock: no setup may start a server between our check and our start.
    with locks.locked(rt.paths.netavark_config / statefiles.ENGINE_LOCK, timeout=60,
                      what="the engine"):
        if not serves(rt.paths) or alive():
            return []
        res = rt.run([bin_path("burrow-dns"), "--config", str(config_dir(rt.paths)), "-p",
                      DNS_PORT, "run"], check=False, timeout=30)
    if res.returncode != 0:
        return [f"could not start burrow-dns: {res.stderr.strip() or res.returncode}"]
    return ["started burrow-dns again"]
