"""Real Podman 4.3 on burrow: throwaway rootful and rootless Podman "worlds" for e2e tests.

Rootful (`RootfulWorld`): a private net+mount namespace (tests/nsutil.Netns) in which
- /run is a fresh tmpfs (so /run/containers/networks, /run/netns, /run/libpod, /run/crun are private),
- /etc/containers is bind-mounted from a copy holding the test containers.conf (default_ulimits,
  cgroupfs, file events) and, through `burrow podman enable --system`, burrow's drop-in,
- storage is `--root/--runroot/--tmpdir` under the test's tmp dir.
The machine's own network, /etc/containers and Podman state are never touched.

Rootless (`RootlessWorld`): the unprivileged harness user (tests/rootless_user.py) with a private
XDG_RUNTIME_DIR, HOME whose ~/.config holds containers.conf + the `burrow podman enable --user`
drop-in, and XDG_DATA_HOME (its own storage and network files). Podman makes its rootless netns
with slirp4netns and execs burrow-netavark inside it.

The config lives at the private HOME's default place, not in an XDG_CONFIG_HOME of its own:
conmon runs a stopped container's `podman container cleanup` with only PATH, HOME and
XDG_RUNTIME_DIR of Podman's environment (and CONTAINERS_CONF when set; seen in
/proc/CONMON/environ with Podman 4.3). With XDG_CONFIG_HOME elsewhere that cleanup read
the user's real (empty) ~/.config, so the network teardown of whichever container it won the
race for ran Debian's netavark 1.4 against burrow's state: on an --internal network it looked
for the DNS file `NET` where burrow keeps `NET%int` (netavark 1.11's name), left the container's
record there, and burrow-dns served it until the world was killed.

Host-wide fixes podman.md §1 needs on this machine type, done idempotently and left in place:
the hugetlb v1 cgroup mount and /dev/net/tun mode 0666.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.nsutil import Netns, have

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
BURROW = VENV_BIN / "burrow"
BURROW_NETAVARK = VENV_BIN / "burrow-netavark"
BURROW_DNS = VENV_BIN / "burrow-dns"
NETAVARK = "/usr/lib/podman/netavark"
AARDVARK = "/usr/lib/podman/aardvark-dns"
IMAGE = "localhost/burrow-busybox:latest"

BASE_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "{backend}"
"""

WRAPPER = '''\
#!/usr/bin/python3
# Logging wrapper (like samples/tooling/netavark-wrapper.py): one JSON record per call.
import json, os, subprocess, sys, time
REAL = {real!r}
LOGDIR = {logdir!r}
stdin = b"" if os.isatty(0) else sys.stdin.buffer.read()
t0 = time.monotonic()
p = subprocess.run([REAL] + sys.argv[1:], input=stdin, capture_output=True)
dt = time.monotonic() - t0
sys.stdout.buffer.write(p.stdout); sys.stdout.flush()
sys.stderr.buffer.write(p.stderr); sys.stderr.flush()
def js(b):
    try: return json.loads(b)
    except Exception: return b.decode(errors="replace")
sub = next((a for a in sys.argv[1:] if a in ("setup", "teardown", "update", "version")), "other")
rec = dict(argv=sys.argv, stdin=js(stdin) if stdin else None, stdout=js(p.stdout) if p.stdout else None,
           stderr=p.stderr.decode(errors="replace"), exit_code=p.returncode, duration_s=dt, command=sub)
with open(os.path.join(LOGDIR, "%.6f-%d-%s.json" % (time.time(), os.getpid(), sub)), "w") as f:
    json.dump(rec, f)
sys.exit(p.returncode)
'''



def in_netns_of(pid: int, ctr: str, cmd: Sequence[str], check: bool, timeout: float
                ) -> subprocess.CompletedProcess[str]:
    """A host tool (dig, python) run in a container's network namespace, by its pid."""
    res = subprocess.run(["nsenter", "-t", str(pid), "-n", "--", *cmd],
                         capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} in {ctr} failed rc={res.returncode}: {res.stdout}{res.stderr}")
    return res

class EnvironmentProblem(RuntimeError):
    """The machine cannot run Podman e2e tests; the message names the environment reason."""


def environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "environment: Podman e2e tests need root (namespaces, test user, cgroup fix)"
    for tool in ("podman", "crun", "conmon", "unshare", "nsenter", "busybox", "slirp4netns"):
        if not have(tool):
            return f"environment: {tool} is not installed"
    if not os.path.exists(NETAVARK):
        return f"environment: {NETAVARK} (Debian's netavark) is not installed"
    if not BURROW_NETAVARK.exists():
        return "environment: .venv is not built (scripts/install)"
    return None


def ensure_host_fixes() -> None:
    """podman.md §1: hugetlb v1 cgroup and /dev/net/tun 0666 (host-wide, idempotent, left)."""
    cg = Path("/sys/fs/cgroup")
    # Hybrid v1 layout with hugetlb still owned by cgroup2 ("unified"): move it to v1.
    if os.path.ismount(cg / "unified") and not os.path.ismount(cg / "hugetlb"):
        (cg / "hugetlb").mkdir(exist_ok=True)
        res = subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(cg / "hugetlb")],
                             capture_output=True, text=True)
        if res.returncode != 0 and not os.path.ismount(cg / "hugetlb"):
            raise EnvironmentProblem(f"environment: cannot mount the hugetlb v1 cgroup: {res.stderr}")
    tun = "/dev/net/tun"
    if os.path.exists(tun) and os.stat(tun).st_mode & 0o666 != 0o666:
        os.chmod(tun, 0o666)


def build_rootfs_tar(workdir: Path) -> Path:
    """podman.md §1: a busybox-static rootfs as a tar (no registry)."""
    tar = workdir / "rootfs.tar"
    if tar.exists():
        return tar
    d = workdir / "rootfs"
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "www", "proc", "sys", "dev", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", d / "bin" / "busybox")
    applets = subprocess.run(["busybox", "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "bin/busybox":
            link = d / a
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to("/bin/busybox")
    (d / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (d / "etc" / "group").write_text("root:x:0:\n")
    (d / "www" / "index.html").write_text("hello-from-pd\n")
    os.chmod(d / "tmp", 0o1777)
    subprocess.run(["tar", "-C", str(d), "-cf", str(tar), "."], check=True)
    os.chmod(tar, 0o644)
    return tar


def write_wrapper(directory: Path, real: str, logdir: Path, aardvark: str | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    logdir.mkdir(parents=True, exist_ok=True)
    w = directory / "netavark"
    w.write_text(WRAPPER.format(real=real, logdir=str(logdir)))
    w.chmod(0o755)
    if aardvark:
        (directory / "aardvark-dns").symlink_to(aardvark)


def read_records(logdir: Path) -> list[dict[str, Any]]:
    recs = []
    for f in sorted(logdir.glob("*.json"), key=lambda p: float(p.name.split("-")[0])):
        recs.append(json.loads(f.read_text()))
    return recs


class RootfulWorld:
    """Rootful Podman inside a private net+mount namespace (see the module doc)."""

    def __init__(self, base: Path, rootfs_tar: Path, *, backend: str = "burrow",
                 wrap: bool = False) -> None:
        self.base = base
        self.backend = backend
        self.logdir = base / "log"
        base.mkdir(parents=True, exist_ok=True)
        self.ns = Netns()
        try:
            self._setup(rootfs_tar, wrap)
        except BaseException:
            self.close()
            raise

    def _setup(self, rootfs_tar: Path, wrap: bool) -> None:
        etc = self.base / "etc-containers"
        shutil.copytree("/etc/containers", etc, symlinks=True)
        (etc / "containers.conf").write_text(
            BASE_CONF.format(backend="cni" if self.backend == "cni" else "netavark"))
        cni = self.base / "cni-net.d"
        cni.mkdir()
        (self.base / "cni-lib").mkdir()
        script = [
            "set -e",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            f"mount --bind {etc} /etc/containers",
        ]
        if os.path.isdir("/etc/cni/net.d"):
            script.append(f"mount --bind {cni} /etc/cni/net.d")
        if os.path.isdir("/var/lib/cni"):
            script.append(f"mount --bind {self.base / 'cni-lib'} /var/lib/cni")
        self.ns.run(["sh", "-c", "\n".join(script)])
        helpers = self.base / "helpers"
        if wrap:
            real = str(BURROW_NETAVARK) if self.backend == "burrow" else NETAVARK
            write_wrapper(helpers, real, self.logdir,
                          str(BURROW_DNS) if self.backend == "burrow" else None)
            dropin = etc / "containers.conf.d"
            dropin.mkdir(exist_ok=True)
            (dropin / "50-wrap.conf").write_text(
                f'[engine]\nhelper_binaries_dir = ["{helpers}", "/usr/lib/podman"]\n')
        elif self.backend == "burrow":
            self.enable_out = self.burrow("podman", "enable", "--system", "--helper-dir", str(helpers))
        self.podman("import", "--change", 'CMD ["/bin/sh"]', str(rootfs_tar), IMAGE)

    # -- running things ------------------------------------------------------------------------
    def podman_argv(self, *args: str) -> list[str]:
        b = self.base
        return ["podman", "--root", str(b / "root"), "--runroot", str(b / "runroot"),
                "--tmpdir", str(b / "tmp"), *args]

    def podman(self, *args: str, check: bool = True, timeout: float = 90,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.ns.run(self.podman_argv(*args), check=check, timeout=timeout, input=input,
                           env=self.env())

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root",
                "LANG": "C.UTF-8"}

    def burrow(self, *args: str) -> str:
        return self.ns.run([str(BURROW), *args], env=self.env()).stdout

    def run(self, cmd: Sequence[str], check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        """A command in the world's "host" namespace (the machine as Podman sees it)."""
        return self.ns.run(cmd, check=check, timeout=timeout)

    def pid(self, ctr: str) -> int:
        return int(self.podman("inspect", "-f", "{{.State.Pid}}", ctr).stdout.strip())

    def in_ctr(self, ctr: str, cmd: Sequence[str], check: bool = True, timeout: float = 30
               ) -> subprocess.CompletedProcess[str]:
        """A host tool (dig, python) run in the container's network namespace."""
        return in_netns_of(self.pid(ctr), ctr, cmd, check, timeout)

    def links(self) -> list[dict[str, Any]]:
        return json.loads(self.run(["ip", "-j", "-d", "link", "show"]).stdout)

    def ns_cmdlines(self) -> list[str]:
        """Command lines of the processes in the world's host network namespace."""
        ino = os.stat(self.ns.path).st_ino
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        out.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
        return out

    def close(self) -> None:
        try:
            if self.ns.proc.poll() is None:
                self.podman("rm", "-af", "-t", "0", check=False, timeout=60)
        except Exception:
            pass
        self.ns.close()


class RootlessWorld:
    """Rootless Podman as the harness user, with private XDG dirs (see the module doc)."""

    def __init__(self, user: Any, base: Path, rootfs_tar: Path, host: Netns | None = None,
                 *, enable: bool = True) -> None:
        self.user = user
        self.base = base
        # `host`: Podman runs in this private netns instead of the machine's own one, so a test
        # may route clients from other namespaces to its published ports (the machine's own
        # network is never touched). Everything of Podman's lives and dies inside it.
        self.host = host
        self.session = user.session()
        self.home = base / "home"
        self.config_home = self.home / ".config"  # HOME's default: see the module doc
        self.data_home = base / "data"
        for d in (base, self.config_home / "containers", self.data_home):
            d.mkdir(parents=True, exist_ok=True)
        (self.config_home / "containers" / "containers.conf").write_text(
            BASE_CONF.format(backend="netavark"))
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(base)], check=True)
        try:
            # enable=False: Podman's own netavark until the test runs `burrow podman enable`.
            self.enable_out = (self.run([str(BURROW), "podman", "enable", "--user"], check=True).out
                               if enable else "")
            shutil.copy(rootfs_tar, base / "rootfs.tar")
            os.chown(base / "rootfs.tar", user.uid, user.gid)
            self.podman("import", "--change", 'CMD ["/bin/sh"]', str(base / "rootfs.tar"), IMAGE)
        except BaseException:
            self.close()
            raise

    def run(self, cmd: Sequence[str], check: bool = False, timeout: float = 90) -> Any:
        env = ["env", f"HOME={self.home}", f"XDG_CONFIG_HOME={self.config_home}",
               f"XDG_DATA_HOME={self.data_home}"]
        if self.host is None:
            return self.session.run([*env, *cmd], check=check, timeout=timeout)
        from tests.rootless_user import Result

        argv = ["nsenter", "-t", str(self.host.pid), "-n", "--", *self.session.argv([*env, *cmd])]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed (rc {res.returncode}):\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return Result(res.returncode, res.stdout, res.stderr)

    def podman(self, *args: str, check: bool = True, timeout: float = 90) -> Any:
        res = self.run(["podman", *args], timeout=timeout)
        if check and res.rc != 0:
            raise AssertionError(f"podman {' '.join(args)} failed (rc {res.rc}):\n{res.out}\n{res.err}")
        return res

    def pid(self, ctr: str) -> int:
        return int(self.podman("inspect", "-f", "{{.State.Pid}}", ctr).out.strip())

    def rootless_netns(self) -> str | None:
        d = Path(self.session.runtime) / "netns"
        found = sorted(d.glob("rootless-netns-*")) if d.is_dir() else []
        return str(found[0]) if found else None

    def in_ctr(self, ctr: str, cmd: Sequence[str], check: bool = True, timeout: float = 30
               ) -> subprocess.CompletedProcess[str]:
        """Root joins the container's netns (a child of the user's userns) to run host tools."""
        return in_netns_of(self.pid(ctr), ctr, cmd, check, timeout)

    def in_rootless_netns(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        ns = self.rootless_netns()
        assert ns, "no rootless netns"
        return subprocess.run(["nsenter", f"--net={ns}", "--", *cmd], capture_output=True, text=True,
                              timeout=30)

    def close(self) -> None:
        try:
            self.podman("rm", "-af", "-t", "0", check=False, timeout=60)
            self.podman("network", "prune", "-f", check=False, timeout=30)
        except Exception:
            pass
        # The pause process (userns holder) stays after the last container: end it.
        pause = Path(self.session.runtime) / "libpod" / "tmp" / "pause.pid"
        try:
            os.kill(int(pause.read_text()), 9)
        except (OSError, ValueError):
            pass
        self.session.close()
        subprocess.run(["rm", "-rf", str(self.base)], check=False)


PROBE = textwrap.dedent("""\
    import socket, sys
    proto, host, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((host, port))
    s.sendall(payload) if proto == "tcp" else s.send(payload)
    if proto == "tcp":
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    else:
        data = s.recv(4096)
    sys.stdout.write(data.decode(errors="replace"))
""")

# TCP + UDP echo servers on the given ports, all addresses (v4 and v6); prints "ready".
ECHO = textwrap.dedent("""\
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for spec in sys.argv[1:]:
        proto, port = spec.split("/")[1], int(spec.split("/")[0])
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        if proto == "tcp":
            s.listen(16)
        sel.register(s, selectors.EVENT_READ, (proto, port))
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            proto, port = key.data
            if proto == "udp":
                data, addr = key.fileobj.recvfrom(4096)
                key.fileobj.sendto(b"udp%d:" % port + data, addr)
            else:
                c, _ = key.fileobj.accept()
                c.settimeout(3)
                data = b""
                try:
                    while True:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    c.sendall(b"tcp%d:" % port + data)
                except OSError:
                    pass
                c.close()
""")


def start_echo(pid: int, specs: Sequence[str]) -> subprocess.Popen[str]:
    """Echo servers inside the network namespace of process `pid` (a container)."""
    p = subprocess.Popen(["nsenter", "-t", str(pid), "-n", "--", sys.executable, "-c", ECHO, *specs],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise AssertionError(f"echo server did not start: {line}{p.stderr.read() if p.stderr else ''}")
    return p


def probe(runner: Any, proto: str, host: str, port: int, payload: str = "hi") -> str:
    """Connect from the world's host namespace; returns the reply ('' on failure)."""
    res = runner([sys.executable, "-c", PROBE, proto, host, str(port), payload], check=False)
    return res.stdout if res.returncode == 0 else ""


def wait_for(fn: Any, timeout: float = 5.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def free_port_block(n: int) -> int:
    """n consecutive TCP ports free on 127.0.0.1 and ::1 of this machine."""
    import random
    import socket

    for _ in range(50):
        base = random.randrange(20000, 40000)
        ok = True
        for port in range(base, base + n):
            for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                s = socket.socket(fam, socket.SOCK_STREAM)
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                finally:
                    s.close()
        if ok:
            return base
    raise RuntimeError("no free port block")
