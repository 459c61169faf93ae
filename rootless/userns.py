"""The per-user user+net+mount(+pid) namespace and the small process that keeps it alive.

Creation uses util-linux `unshare` (a fresh, single-threaded process: `unshare(CLONE_NEWUSER)`
fails in a threaded one, and Python 3.11 has no os.setns/os.unshare anyway):

    unshare --user --map-root-user [--map-auto] --net --mount --propagation private \
            --pid --fork --kill-child catatonit -P

The holder is catatonit, PID 1 of a new PID namespace. That buys two things at once:
- it reaps: daemons started inside (burrow-dns, the forwarder's dialer) never linger as zombies
  even though this machine's PID 1 does not reap orphans;
- nothing started inside can outlive it: when PID 1 of a PID namespace dies, the kernel kills
  every process in it.

Every later command joins with `nsenter --preserve-credentials -U -m -n -p -t HOLDER`, again a
fresh single-threaded process.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from netns.errors import BurrowError
from rootless.paths import StatePaths, read_json, remove, write_json
from rootless.procs import ProcRef, children
from rootless.records import WorldRecord

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Fallback holder when catatonit is missing: PID 1 that reaps and otherwise sleeps.
_PY_REAPER = (
    "import os,signal\n"
    "signal.signal(signal.SIGTERM,lambda *a:os._exit(0))\n"
    "signal.signal(signal.SIGCHLD,lambda *a:None)\n"
    "while True:\n"
    " try:\n  os.wait()\n"
    " except ChildProcessError:\n  signal.pause()\n"
)


def _holder_argv() -> list[str]:
    for cand in (shutil.which("catatonit"), "/usr/libexec/podman/catatonit"):
        if cand and os.access(cand, os.X_OK):
            return [cand, "-P"]
    return [sys.executable, "-c", _PY_REAPER]


def has_subids(user_id: int | None = None) -> bool:
    """Whether newuidmap can give this user a full subordinate range (for `--map-auto`)."""
    import pwd

    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        return False
    uid = os.getuid() if user_id is None else user_id
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    for f in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(f) as fh:
                if not any(line.split(":", 1)[0] in (name, str(uid)) for line in fh):
                    return False
        except FileNotFoundError:
            return False
    return True


def tied(cmd: Sequence[str]) -> list[str]:
    """`cmd` killed when its parent dies (`setpriv --pdeathsig KILL`, util-linux like nsenter).

    A command run in the world must not outlive the burrow that ran it: SIGKILLed (the OOM
    killer, a CI timeout), that burrow released its locks, and the next `burrow up` tears down
    and re-creates what it finds while the orphan, say an engine setup holding the old netns
    open, goes on changing the same sandbox (found by test_killed_restore_converges). Tied at
    both ends of nsenter: to us, and (inside the PID namespace, as nsenter's forked child) to
    nsenter. Daemons a command starts fork first, and a fork does not inherit the tie."""
    return ["setpriv", "--pdeathsig", "KILL", *cmd] if shutil.which("setpriv") else list(cmd)


@dataclass(frozen=True)
class Holder:
    proc: ProcRef
    paths: StatePaths

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.proc.pid}/ns/net"

    @property
    def userns_path(self) -> str:
        return f"/proc/{self.proc.pid}/ns/user"

    def alive(self) -> bool:
        return self.proc.alive()

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        # Debian's user PATH lacks /usr/sbin (ip, nft, iptables); the legacy iptables lock
        # lives in root-owned /run, so point it at our own directory.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}:{SBIN_PATH}"
        env["XTABLES_LOCKFILE"] = str(self.paths.xtables_lock)
        env.update(extra or {})
        return env

    def join_argv(self, *, net: bool = True, pid: bool = True) -> list[str]:
        argv = ["nsenter", "--preserve-credentials", "-U", "-m", "-t", str(self.proc.pid)]
        if net:
            argv.append("-n")
        if pid:
            argv.append("-p")
        return [*argv, "--"]

    def run(
        self, cmd: Sequence[str], *, input: str | None = None, check: bool = True,
        net: bool = True, timeout: float = 60, what: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            tied([*self.join_argv(net=net), *tied(cmd)]), input=input, capture_output=True,
            text=True,
            env=self.env(env), timeout=timeout, stdin=None if input is not None else
            subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            detail = (res.stderr.strip() or res.stdout.strip() or f"exit code {res.returncode}")
            raise BurrowError(f"{what or cmd[0]}: {detail}")
        return res

    # Sandbox network namespaces are bind mounts on a tmpfs inside the holder's mount ns.
    def sandbox_netns(self, name: str) -> str:
        """The path as seen inside the holder's mount namespace."""
        return str(self.paths.netns_dir / name)

    def sandbox_netns_outside(self, name: str) -> str:
        """The same namespace as reachable from the host's mount namespace (same-uid check)."""
        return f"/proc/{self.proc.pid}/root{self.paths.netns_dir / name}"


def find(paths: StatePaths) -> Holder | None:
    rec = WorldRecord.from_json(read_json(paths.holder))
    if rec is None or not rec.holder.alive():
        return None
    return Holder(rec.holder, paths)


def stale_holder(paths: StatePaths) -> ProcRef | None:
    """A recorded holder that is no longer alive (its state needs repair), if any."""
    if not paths.holder.exists():
        return None
    rec = WorldRecord.from_json(read_json(paths.holder))
    if rec is None or not rec.holder.alive():
        return rec.holder if rec else ProcRef(0, 0)
    return None


def _explain_unshare(log: str) -> str:
    if "Operation not permitted" in log or "Permission denied" in log:
        return (
            f"{log}; unprivileged user namespaces look disabled: ask an admin to set "
            "`sysctl kernel.unprivileged_userns_clone=1` (Debian) and "
            "`user.max_user_namespaces` > 0"
        )
    if "No space left" in log:
        return f"{log}; raise `sysctl user.max_user_namespaces`"
    return log


def _spawn(paths: StatePaths, map_auto: bool) -> tuple[subprocess.Popen[bytes], Path]:
    log = paths.holder_log
    argv = ["unshare", "--user", "--map-root-user"]
    if map_auto:
        argv.append("--map-auto")
    argv += ["--net", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
             *_holder_argv()]
    with open(log, "wb") as logf:
        # A new session: the holder must survive the terminal (SIGHUP) that started burrow.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True, cwd="/")
    return proc, log


def _wait_child(proc: subprocess.Popen[bytes], timeout: float) -> ProcRef | None:
    mine = os.stat("/proc/self/ns/user").st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        for kid in children(proc.pid):
            try:
                if os.stat(f"/proc/{kid}/ns/user").st_ino != mine and \
                        os.stat(f"/proc/{kid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino:
                    with open(f"/proc/{kid}/uid_map") as f:
                        if f.read().strip():
                            return ProcRef.of(kid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass  # gone, or unshare's setuid newuidmap helper
        time.sleep(0.002)
    return None


def create(paths: StatePaths, *, timeout: float = 10.0) -> Holder:
    """Make the namespaces and set them up. The caller holds the state lock."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        raise BurrowError("create user namespace: `unshare`/`nsenter` not found; "
                          "install util-linux")
    attempts = [True, False] if has_subids() else [False]
    last = ""
    for map_auto in attempts:
        proc, log = _spawn(paths, map_auto)
        # Until holder.json names the holder, only this file knows it exists: if we are killed
        # now, the next repair kills this unshare (and with it, --kill-child, the holder).
        pending = ProcRef.of(proc.pid)
        if pending is not None:
            write_json(paths.holder_pending, {"unshare": pending.to_json()})
        with ExitStack() as undo:
            undo.callback(proc.kill)
            ref = _wait_child(proc, timeout)
            undo.pop_all()
        if ref is not None:
            break
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last = log.read_text(errors="replace").strip() or f"unshare exited with {proc.returncode}"
    else:
        remove(paths.holder_pending)
        raise BurrowError(f"create user namespace: {_explain_unshare(last)}")
    write_json(paths.holder, WorldRecord(ref, proc.pid, map_auto, time.time()).to_json())
    remove(paths.holder_pending)
    holder = Holder(ref, paths)
    with ExitStack() as undo:
        undo.callback(destroy, holder)
        _inner_setup(holder)
        undo.pop_all()
    return holder


def reap_pending(paths: StatePaths) -> bool:
    """Kill a holder whose maker died before recording it. Caller holds the state lock (so
    no live command is making one). True if there was one."""
    data = read_json(paths.holder_pending)
    ref = ProcRef.from_json(data.get("unshare") if data else None)
    remove(paths.holder_pending)
    if ref is None or not ref.alive():
        return False
    ref.kill()
    return True


def _inner_setup(holder: Holder) -> None:
    netns_dir = holder.paths.netns_dir
    # One exec for all of it. A tmpfs for the sandbox netns files keeps their bind mounts
    # private to this mount ns (nothing to clean on the host if we are killed); DAD off so the
    # DNS server can bind gateway v6 addresses at once; forwarding on for the bridges.
    # A procfs of the holder's PID namespace: tools inside (unshare --net=FILE, ip netns)
    # resolve /proc/PID with the PIDs they see; the host's procfs would name other processes.
    script = f"""set -e
mount -t proc proc /proc
ip link set lo up
mount -t tmpfs -o mode=0700 burrow-netns {shlex.quote(str(netns_dir))}
for f in ipv6/conf/default/accept_dad ipv6/conf/all/accept_dad; do echo 0 > /proc/sys/net/$f; done
# A connector's tap created from now on solicits router advertisements although forwarding is
# on (slirp4netns' IPv6 address comes from SLAAC); the connector restores the default after.
echo 2 > /proc/sys/net/ipv6/conf/default/accept_ra
echo 1 > /proc/sys/net/ipv4/ip_forward
echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
"""
    holder.run(["sh", "-c", script], what="set up the user namespace")


def destroy(holder: Holder) -> None:
    """Kill the holder: the kernel then kills everything in its PID namespace."""
    holder.proc.kill()
    rec = WorldRecord.from_json(read_json(holder.paths.holder))
    unshare = rec.unshare if rec else None
    if unshare is not None:
        # unshare(1) exits once its child dies; reap it if it is ours (tests), else ignore.
        try:
            os.waitpid(unshare, os.WNOHANG)
        except ChildProcessError:
            pass
    remove(holder.paths.holder)
