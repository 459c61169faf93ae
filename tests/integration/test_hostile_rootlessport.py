"""burrow-rootlessport's control socket re-points a container's published ports, so only the
user's own uid may use it. Upstream (and burrow before) relied on `TmpDir/rp` being 0700, but
`makedirs(exist_ok=True)` keeps a directory that was already there with whatever mode it had,
and a directory of another user was used as is. Now the directory is made 0700 and must be
ours, and a peer of another uid (SO_PEERCRED) is closed without an answer."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_rootlessport_contract import (  # noqa: F401 - env is a fixture
    CID,
    IP1,
    IP2,
    Ctr,
    Dropin,
    env,
    mappings,
    talk,
)
from tests.nsutil import Netns

NOBODY = 65534
# Connect to the control socket through an inherited directory fd as `nobody`, ask for IP2.
AS_NOBODY = textwrap.dedent("""\
    import os, socket, sys
    fd, cid, uid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    os.setgid(uid); os.setgroups([]); os.setuid(uid)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    try:
        s.connect(f"/proc/self/fd/{fd}/{cid}")
        s.send(b'"%s"\\n' % sys.argv[4].encode())
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    except OSError as e:
        out = b"error: " + str(e).encode()
    print(out.decode(errors="replace"))
""")


def _ask_as_nobody(rp: Path, ip: str) -> str:
    fd = os.open(rp, os.O_RDONLY | os.O_DIRECTORY)
    try:
        res = subprocess.run([sys.executable, "-c", AS_NOBODY, str(fd), CID, str(NOBODY), ip],
                             pass_fds=(fd,), capture_output=True, text=True, timeout=20, check=True)
    finally:
        os.close(fd)
    return res.stdout.strip()


def _cfg(ctr: Ctr, tmp: Path) -> dict[str, object]:
    return {"Mappings": mappings(("", 8080, 80, 1, "tcp")), "NetNSPath": ctr.ns.path,
            "TmpDir": str(tmp), "ChildIP": IP1, "ContainerID": CID, "RootlessCNI": True}


def test_a_wide_open_control_dir_is_narrowed_and_other_uids_are_refused(
    env: tuple[Netns, Ctr, Path],  # noqa: F811
) -> None:
    host, ctr, tmp = env
    rp = tmp / "rp"
    rp.mkdir(mode=0o777)
    rp.chmod(0o777)  # as a wide umask or another tool left it
    d = Dropin(host, _cfg(ctr, tmp))
    try:
        assert d.ready() == b"1"
        assert stat.S_IMODE(rp.stat().st_mode) == 0o700
        # Even if both are opened up again, another uid's request is not served.
        rp.chmod(0o777)
        (rp / CID).chmod(0o777)
        answer = _ask_as_nobody(rp, IP2)
        assert "OK" not in answer, answer
        assert talk(host, "tcp", "127.0.0.1", 8080) == f"tcp {IP1}:80 hi"  # not re-pointed
    finally:
        assert d.stop() == 0
        d.close()


def test_a_control_dir_of_another_user_is_refused_before_ready(
    env: tuple[Netns, Ctr, Path],  # noqa: F811
) -> None:
    host, ctr, tmp = env
    rp = tmp / "rp"
    rp.mkdir(mode=0o777)
    os.chown(rp, NOBODY, NOBODY)
    d = Dropin(host, _cfg(ctr, tmp))
    try:
        assert d.ready() == b""
        assert d.proc.wait(10) == 1
        assert d.proc.stdout is not None
        out = d.proc.stdout.read().decode()
        assert f"control socket directory {rp} belongs to uid {NOBODY}" in out, out
        assert not (rp / CID).exists()
    finally:
        d.close()


def test_a_fifo_or_a_device_as_netnspath_fails_before_ready_without_blocking(
    env: tuple[Netns, Ctr, Path],  # noqa: F811
) -> None:
    """open(O_RDONLY) of a FIFO blocks until a writer comes: rootlessport (and `podman run`)
    hung there forever. Both now get the error line at once."""
    host, ctr, tmp = env
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        d = Dropin(host, {**_cfg(ctr, tmp), "NetNSPath": str(path)})
        try:
            try:
                code = d.proc.wait(20)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                raise AssertionError(f"rootlessport blocked on NetNSPath {path}") from None
            assert code == 1 and d.ready() == b""
            assert d.proc.stdout is not None
            assert f"NetNSPath {path} is not a network namespace" in d.proc.stdout.read().decode()
        finally:
            d.close()


def test_a_control_dir_that_is_a_symlink_is_refused_and_its_target_left_alone(
    env: tuple[Netns, Ctr, Path],  # noqa: F811
) -> None:
    """rp/ planted as a symlink to another directory: that directory was used for the socket
    and, since the mode check, narrowed to 0700."""
    host, ctr, tmp = env
    target = tmp / "elsewhere"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    (tmp / "rp").symlink_to(target)
    d = Dropin(host, _cfg(ctr, tmp))
    try:
        assert d.ready() == b""
        assert d.proc.wait(10) == 1
        assert d.proc.stdout is not None
        assert "is a symlink: remove it" in d.proc.stdout.read().decode()
        assert stat.S_IMODE(target.stat().st_mode) == 0o755 and list(target.iterdir()) == []
    finally:
        d.close()


class _SoftFds:
    """The host netns, with burrow-rootlessport started under the usual soft fd limit (1024)."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns

    def argv(self, cmd: list[str]) -> list[str]:
        return self.ns.argv(["prlimit", "--nofile=1024:", *cmd])


def test_a_port_range_past_the_soft_fd_limit_is_bound_as_upstream_binds_it(
    env: tuple[Netns, Ctr, Path],  # noqa: F811
) -> None:
    """Go raises the soft fd limit at start-up, so upstream binds `-p 30000-31999:80-2079`;
    burrow bound every port before raising it and failed `podman run` with "listen tcp
    [::]:31019: bind: too many open files"."""
    if shutil.which("prlimit") is None:
        pytest.skip("environment: needs prlimit (util-linux)")
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4096:
        pytest.skip("environment: the hard fd limit is below 4096")
    host, ctr, tmp = env
    d = Dropin(_SoftFds(host), {"Mappings": mappings(("", 30000, 80, 2000, "tcp")),  # type: ignore[arg-type]
                                "NetNSPath": ctr.ns.path, "ChildIP": IP1, "ContainerID": CID})
    try:
        ready = d.ready()
        assert d.proc.stdout is not None
        assert ready == b"1", d.proc.stdout.read().decode()
        assert talk(host, "tcp", "127.0.0.1", 30000) == f"tcp {IP1}:80 hi"
        assert talk(host, "tcp", "127.0.0.1", 30001) == f"tcp {IP1}:81 hi"
        assert "failed" in talk(host, "tcp", "127.0.0.1", 31999)  # bound, nothing serves 2079
    finally:
        rc = d.stop()
        d.close()
    assert rc == 0
