"""Can users other than the installer run this burrow install? (`burrow podman enable --system`)

A system-wide drop-in makes every user's Podman run burrow's helpers. From an install other users
cannot read (a venv in a 0700 home, the clone of a user whose home is private) their Podman would
find nothing it can execute and silently fall back to its own netavark. So `enable --system`
refuses such an install, naming the path that blocks and the fix.

Two checks, both needed:
- as root, the helpers are really run as `nobody` (setpriv): the entry points' `version`, and the
  interpreter importing the engine and DNS server (what Podman's `setup` starts). This catches
  everything, but says little about why;
- a walk of the mode bits (others' r/x along every path involved) names the first path that
  blocks; it is the whole check when not root (a redirected --conf-dir in tests).
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from netns.errors import BurrowError

NOBODY = 65534
# What the engine and burrow-dns import when Podman runs them (netns.client spawns netns.server).
RUNTIME_MODULES = ("netns.server", "netns.netavark_cli", "netns.dns.server")
PACKAGES = ("netns", "pyroute2", "dnslib")


def _blocked(path: Path, want: int) -> str | None:
    """Why others cannot use `path` (`want`: the 'other' bits it needs), or None."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if stat.S_IMODE(st.st_mode) & want != want:
        need = ("r" if want & 0o4 else "") + ("x" if want & 0o1 else "")
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        return (f"{path} is mode {stat.S_IMODE(st.st_mode):04o}: other users lack {need} on "
                f"this {kind} (`chmod o+{need} {path}`)")
    return None


def _ancestors(path: Path) -> list[Path]:
    return [*reversed(path.parents)]


def _chain(path: Path) -> list[Path]:
    """The path and every symlink hop to its target, absolute."""
    out = [path.absolute()]
    seen = set()
    cur = out[0]
    while cur.is_symlink() and cur not in seen:
        seen.add(cur)
        cur = (cur.parent / os.readlink(cur)).absolute()
        out.append(cur)
    return out


def _interpreter(script: Path) -> Path | None:
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return Path(words[0]) if words else None


def _tree(top: Path, limit: int = 20000) -> Iterable[tuple[Path, int]]:
    """A package directory: every directory needs r+x, every file r (bounded walk)."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        yield Path(dirpath), 0o5
        for f in filenames:
            n += 1
            if n > limit:
                return
            yield Path(dirpath) / f, 0o4


def mode_problems(entry_points: Sequence[Path], packages: Sequence[str] = PACKAGES) -> list[str]:
    """Every reason (by mode bits) others cannot run these entry points and import burrow."""
    wanted: list[tuple[Path, int]] = []
    for ep in entry_points:
        for hop in _chain(ep):
            wanted += [(d, 0o1) for d in _ancestors(hop)] + [(hop, 0o5)]
        interp = _interpreter(ep.resolve())
        if interp is not None:
            for hop in _chain(interp):
                wanted += [(d, 0o1) for d in _ancestors(hop)] + [(hop, 0o1)]
    for name in packages:
        spec = importlib.util.find_spec(name)
        locs = list(spec.submodule_search_locations or []) if spec else []
        for loc in locs:
            top = Path(loc).resolve()
            wanted += [(d, 0o1) for d in _ancestors(top)] + list(_tree(top))
    problems: list[str] = []
    seen: set[Path] = set()
    for path, want in wanted:
        if path in seen:
            continue
        seen.add(path)
        why = _blocked(path, want)
        if why:
            problems.append(why)
    return problems


def _as_nobody(argv: Sequence[str]) -> str | None:
    """Run argv as uid/gid 65534 with an empty environment; the failure's last line, or None."""
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
           "env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", *argv]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(argv)}: {e}"
    if res.returncode == 0:
        return None
    last = (res.stderr.strip() or res.stdout.strip() or f"exit {res.returncode}").splitlines()[-1]
    return f"`{' '.join(argv)}` as another user: {last}"


def run_problems(entry_points: Sequence[Path]) -> list[str]:
    """As root: run the helpers as `nobody`, as another user's Podman would."""
    out = [_as_nobody([str(ep), "version"]) for ep in entry_points]
    out.append(_as_nobody([sys.executable, "-c", "import " + ", ".join(RUNTIME_MODULES)]))
    return [p for p in out if p]


def require_runnable_by_others(entry_points: Sequence[Path], euid: int | None = None) -> None:
    euid = os.geteuid() if euid is None else euid
    failed = run_problems(entry_points) if euid == 0 else []
    why = mode_problems(entry_points)
    if not failed and not why:
        return
    venv = Path(sys.prefix)
    lines = why[:5] + (["..."] if len(why) > 5 else []) if why else failed[:3]
    raise BurrowError(
        "other users cannot run this burrow install, so their Podman would silently fall back to "
        f"its own netavark: {'; '.join(lines)}. Fix: make those paths readable by others (the "
        "chmod named above), or install burrow where every user can read it, e.g. "
        "`sudo python3 -m venv /opt/burrow && sudo /opt/burrow/bin/pip install <your clone>`, "
        f"then `sudo /opt/burrow/bin/burrow podman enable --system` (this install: {venv})")
