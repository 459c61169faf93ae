"""Run burrow as an unprivileged user, the way a developer without root would.

Root is used only here, for set-up: create the test user (idempotent), give it a subordinate
uid/gid range, make /dev/net/tun usable, and make a private 0700 runtime directory per session
(there is no logind on CI machines, so nothing else provides $XDG_RUNTIME_DIR).
Everything burrow itself does then runs as that user through `runuser ... env -i ...`.

Usable as a module (`RootlessUser`, `Session`) and as a script:
    python -m tests.rootless_user setup            # create the user, fix /dev/net/tun
    python -m tests.rootless_user run -- burrow demo
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_USER = "burrowtest"
SUBID_COUNT = 65536
PATH = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


class HarnessError(RuntimeError):
    """The machine is not set up so that an unprivileged user can run burrow; says why."""


def _run(cmd: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]


def _subid_ranges(path: str) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    out.append((parts[0], int(parts[1]), int(parts[2])))
    except FileNotFoundError:
        pass
    return out


def _ensure_subids(user: str, path: str) -> None:
    ranges = _subid_ranges(path)
    if any(name == user for name, _, _ in ranges):
        return
    # Pick the first range after everything already handed out, so two users never overlap.
    start = max([100000] + [s + n for _, s, n in ranges])
    with open(path, "a") as f:
        f.write(f"{user}:{start}:{SUBID_COUNT}\n")


def _make_tun_usable(user: str) -> None:
    tun = "/dev/net/tun"
    if not os.path.exists(tun):
        raise HarnessError(f"{tun} does not exist; load the tun module (modprobe tun)")
    mode = stat.S_IMODE(os.stat(tun).st_mode)
    if mode & 0o006 == 0o006:
        return
    if shutil.which("setfacl"):
        # A per-user ACL is the narrowest change that makes slirp4netns/pasta work for this user.
        res = _run(["setfacl", "-m", f"u:{user}:rw", tun])
        if res.returncode == 0:
            return
    # 0666 is the distro default, and what rootless Podman needs too.
    os.chmod(tun, 0o666)


@dataclass(frozen=True)
class RootlessUser:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def ensure(cls, name: str = DEFAULT_USER) -> RootlessUser:
        """Create (idempotently) and prepare the test user. Needs root."""
        if os.geteuid() != 0:
            raise HarnessError("creating the rootless test user needs root")
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            res = _run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name])
            if res.returncode != 0 and "already exists" not in res.stderr:
                raise HarnessError(f"useradd {name} failed: {res.stderr.strip()}") from None
            pw = pwd.getpwnam(name)
        _ensure_subids(name, "/etc/subuid")
        _ensure_subids(name, "/etc/subgid")
        _make_tun_usable(name)
        user = cls(name=name, uid=pw.pw_uid, gid=pw.pw_gid, home=pw.pw_dir)
        user.check_access()
        return user

    def check_access(self) -> None:
        """The user must be able to run the venv's python and import the repo's packages."""
        probe = _run(
            ["runuser", "-u", self.name, "--", str(VENV_BIN / "python"), "-c",
             "import rootless, netns, pexpect, typer"],
            cwd="/",
        )
        if probe.returncode == 0:
            return
        blocked = [
            str(p) for p in [*reversed(REPO.parents), REPO, REPO / ".venv"]
            if p.exists() and not (os.stat(p).st_mode & 0o005 == 0o005)
        ]
        hint = (
            f"these directories are not world-readable/searchable: {', '.join(blocked)}; "
            "clone the repository somewhere world-readable (e.g. /opt/burrow or /work) or "
            "`chmod o+rx` them" if blocked else
            "check that .venv was made from /usr/bin/python3 (scripts/install) and is readable"
        )
        raise HarnessError(
            f"user {self.name} cannot run {VENV_BIN / 'python'} with the repo importable: "
            f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else 'failed'}; {hint}"
        )

    def session(self) -> Session:
        runtime = tempfile.mkdtemp(prefix="burrow-rt-", dir="/tmp")
        os.chown(runtime, self.uid, self.gid)
        os.chmod(runtime, 0o700)
        return Session(self, runtime)


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


class Session:
    """One private $XDG_RUNTIME_DIR: a whole burrow "world" of its own for one test."""

    def __init__(self, user: RootlessUser, runtime: str) -> None:
        self.user = user
        self.runtime = runtime

    def env(self) -> dict[str, str]:
        return {
            "HOME": self.user.home, "USER": self.user.name, "LOGNAME": self.user.name,
            "PATH": PATH, "XDG_RUNTIME_DIR": self.runtime, "LANG": "C.UTF-8",
            # Networks live in the data dir (they survive reboots): one per session too.
            "XDG_DATA_HOME": f"{self.runtime}/data",
        }

    def argv(self, cmd: Sequence[str]) -> list[str]:
        env = [f"{k}={v}" for k, v in self.env().items()]
        return ["runuser", "-u", self.user.name, "--", "env", "-i", *env, *cmd]

    def run(self, cmd: Sequence[str], *, input: str | None = None, timeout: float = 60,
            check: bool = False) -> Result:
        res = subprocess.run(self.argv(cmd), input=input, capture_output=True, text=True,
                             timeout=timeout, cwd="/")
        out = Result(res.returncode, res.stdout, res.stderr)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed (rc {res.returncode}):\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return out

    def burrow(self, *args: str, **kw: object) -> Result:
        return self.run([str(VENV_BIN / "burrow"), *args], **kw)  # type: ignore[arg-type]

    def popen(self, cmd: Sequence[str], **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(cmd), text=True, cwd="/", **kw)  # type: ignore[call-overload, no-any-return]

    def leftover_pids(self) -> list[int]:
        """Processes still carrying this session's runtime dir in their environment."""
        needle = f"XDG_RUNTIME_DIR={self.runtime}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    status = f.read()
                if "\nState:\tZ" in status:
                    continue  # zombies of a non-reaping PID 1 hold nothing
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        return found

    def close(self) -> list[int]:
        """`burrow down`, then kill anything left (and report it, so a test can fail on it)."""
        try:
            self.burrow("down", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        left = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            left = self.leftover_pids()
            if not left:
                break
            time.sleep(0.05)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.runtime, ignore_errors=True)
        return left


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("setup", "run"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        user = RootlessUser.ensure()
    except HarnessError as e:
        print(f"rootless_user: {e}", file=sys.stderr)
        return 1
    if argv[0] == "setup":
        print(f"user {user.name} (uid {user.uid}) ready")
        return 0
    cmd = argv[1:]
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    session = user.session()
    print(f"XDG_RUNTIME_DIR={session.runtime}", file=sys.stderr)
    try:
        return subprocess.call(session.argv(cmd), cwd="/")
    finally:
        session.close()  # `burrow down` and remove the private runtime dir


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
