"""Run burrow as an unprivileged user, the way a developer without root would.

Root is used only here, for set-up: create the test user (idempotent), give it a subordinate
uid/gid range, make /dev/net/tun usable, and make a private 0700 runtime directory per session
(there is no logind on CI machines, so nothing else provides $XDG_RUNTIME_DIR), and a cgroup
per session where cgroup v2 is writable, so that whatever a world leaves running is found.
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

from netns import statefiles

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_USER = "burrowtest"
SUBID_COUNT = 65536
RUNTIME_PARENT, RUNTIME_PREFIX = "/tmp", "burrow-rt-"  # each session's runtime dir
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
        runtime = tempfile.mkdtemp(prefix=RUNTIME_PREFIX, dir=RUNTIME_PARENT)
        os.chown(runtime, self.uid, self.gid)
        os.chmod(runtime, 0o700)
        return Session(self, runtime, _make_cgroup(os.path.basename(runtime)))


# -- finding what a world left behind ---------------------------------------------------------
# A daemon that sets its process title (setproctitle: burrow-dns, the forwarder, the engine)
# overwrites the memory /proc/PID/environ reads, so "XDG_RUNTIME_DIR=<ours> in its environment"
# misses exactly the long-lived processes a leak is made of. Each session therefore runs its
# commands in a cgroup of its own (cgroup v2, where the machine has it writable): every
# descendant stays in it whatever it does (daemonizing, new namespaces, a new title), so its
# member list is the world. The environment and the command line (the title still names the
# runtime dir: `burrow-dns --config <runtime>/...`) are kept as markers where there is no cgroup.
_CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")

# Descriptions of processes a closed session left (and killed), until a test's teardown takes
# them (tests/conftest.py): a leftover fails the test whose world it was, whoever closed it.
# (A burrow-dns of a rootless Podman world was once only warned about: conmon's cleanup ran
# Debian's netavark against burrow's DNS files; tests/e2e/podman_env.py says why it no longer
# does. It fails like any other leftover now.)
LEFTOVERS: list[str] = []


def take_leftovers() -> list[str]:
    out = LEFTOVERS[:]
    LEFTOVERS.clear()
    return out


def _make_cgroup(name: str) -> str | None:
    for root in _CGROUP_ROOTS:
        if not os.path.exists(f"{root}/cgroup.controllers"):  # only cgroup v2 has it
            continue
        _sweep_cgroups(root)
        path = f"{root}/burrow-test-{name}"
        try:
            os.mkdir(path)
            return path
        except OSError:
            continue
    return None


def _sweep_cgroups(root: str) -> None:
    """Remove the cgroups of closed sessions that were still busy when closed (a killed
    member not yet gone: exiting takes a while on a loaded machine, and a zombie of this
    machine's non-reaping PID 1 can hold one). A session's is closed once its runtime dir
    is gone; a busy one stays until a later sweep."""
    try:
        names = [n for n in os.listdir(root) if n.startswith(f"burrow-test-{RUNTIME_PREFIX}")]
    except OSError:
        return
    for n in names:
        if not os.path.exists(f"{RUNTIME_PARENT}/{n.removeprefix('burrow-test-')}"):
            try:
                os.rmdir(f"{root}/{n}")
            except OSError:
                pass


def _cgroup_pids(path: str) -> set[int]:
    found: set[int] = set()
    for d, _, _ in os.walk(path):
        try:
            with open(f"{d}/cgroup.procs") as f:
                found.update(int(line) for line in f if line.strip())
        except OSError:
            pass
    return found


def _remove_cgroup(path: str) -> None:
    for _ in range(40):  # members that were just killed leave it a moment later
        try:
            for d, _, _ in sorted(os.walk(path), key=lambda t: -len(t[0])):
                os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def describe(pid: int) -> str:
    """`PID user: command line` (the title for a titled daemon), for a failure message."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        owner = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return f"{pid} (gone)"
    return f"{pid} {owner}: {cmd}"


# -- who keeps a network namespace alive ------------------------------------------------------
SIOCGSKNS = 0x894C  # ioctl: an fd for the netns a socket belongs to (linux/sockios.h)
SYS_PIDFD_GETFD = 438


def _socket_netns(pid: int, fd: int) -> int | None:
    """The netns inode of socket `fd` of process `pid` (a copy of it by pidfd_getfd, then
    SIOCGSKNS): a socket keeps its netns alive though nothing in /proc names it."""
    import ctypes
    import fcntl

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        mine = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if mine < 0:
            return None
        try:
            ns = fcntl.ioctl(mine, SIOCGSKNS)
            try:
                return os.fstat(ns).st_ino
            finally:
                os.close(ns)
        except OSError:
            return None
        finally:
            os.close(mine)
    finally:
        os.close(pidfd)


def netns_holders(inode: int) -> list[str]:
    """Everything on the machine that keeps netns `inode` alive and can be seen: a task in it,
    an open fd of it (a netns file or /proc/PID/ns/net), a socket in it. (A bind mount is
    the other way: where it is mounted is the caller's to check.) Needs root."""
    needle = f"net:[{inode}]"
    found: list[str] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                if os.readlink(f"/proc/{pid}/task/{tid}/ns/net") == needle:
                    found.append(f"task {tid} in it: {describe(pid)}")
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target == needle:  # an nsfs file reads as net:[INODE] wherever it was opened
                    found.append(f"fd {fd} opens it: {describe(pid)}")
                elif target.startswith("socket:") and _socket_netns(pid, int(fd)) == inode:
                    found.append(f"socket fd {fd} in it: {describe(pid)}")
        except OSError:
            continue
    return found


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


class Session:
    """One private $XDG_RUNTIME_DIR: a whole burrow "world" of its own for one test."""

    def __init__(self, user: RootlessUser, runtime: str, cgroup: str | None = None) -> None:
        self.user = user
        self.runtime = runtime
        self.cgroup = cgroup  # see _make_cgroup; None: markers only
        # Which test made this world, for the failure a leftover of it becomes.
        self.origin = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0] or "a session"

    def env(self) -> dict[str, str]:
        return {
            "HOME": self.user.home, "USER": self.user.name, "LOGNAME": self.user.name,
            "PATH": PATH, "XDG_RUNTIME_DIR": self.runtime, "LANG": "C.UTF-8",
            # Networks live in the data dir (they survive reboots): one per session too.
            "XDG_DATA_HOME": f"{self.runtime}/data",
        }

    def argv(self, cmd: Sequence[str]) -> list[str]:
        env = [f"{k}={v}" for k, v in self.env().items()]
        argv = ["runuser", "-u", self.user.name, "--", "env", "-i", *env, *cmd]
        if self.cgroup is None:
            return argv
        # Still root here: join the session's cgroup (if that fails, the markers remain), then
        # become the user.
        join = 'echo $$ 2>/dev/null > "$0"; exec "$@"'
        return ["sh", "-c", join, f"{self.cgroup}/cgroup.procs", *argv]

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
        """Live processes of this session's world: its cgroup's members, and any process whose
        environment or command line names its runtime dir."""
        env_needle = f"XDG_RUNTIME_DIR={self.runtime}".encode()
        cmd_needle = self.runtime.encode()
        members = _cgroup_pids(self.cgroup) if self.cgroup else set()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    status = f.read()
                if "\nState:\tZ" in status:
                    continue  # zombies of a non-reaping PID 1 hold nothing
                if int(entry) in members:
                    found.append(int(entry))
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if cmd_needle in f.read():
                        found.append(int(entry))
                        continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if env_needle in f.read().split(b"\0"):
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        return found

    def close(self) -> list[str]:
        """`burrow down`, then kill anything left. Returns what was left (`describe`), and
        records it in LEFTOVERS, so the test whose world it was fails (tests/conftest.py)."""
        try:
            self.burrow("down", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # A warm engine (netns/server.py) of a world burrow does not manage (Podman's config
        # dir) idles out after 30 s; removing its socket is how it is told to go now.
        for sock in Path(self.runtime).rglob(statefiles.ENGINE_SOCK):
            sock.unlink(missing_ok=True)
        left: list[int] = []
        deadline = time.monotonic() + 5  # an engine notices its socket is gone within 1 s
        while time.monotonic() < deadline:
            left = self.leftover_pids()
            if not left:
                break
            time.sleep(0.05)
        described = [describe(pid) for pid in left]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.cgroup:
            _remove_cgroup(self.cgroup)
        shutil.rmtree(self.runtime, ignore_errors=True)
        if described:
            LEFTOVERS.append(f"{self.origin}: {'; '.join(described)}")
        return described


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
