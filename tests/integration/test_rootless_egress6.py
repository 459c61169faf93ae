"""IPv6 egress from a sandbox to a server the test runs on the host's ::1, through each
connector's host-loopback address (slirp4netns: fd00::2; pasta: its IPv6 gateway), and the same
address closed when host loopback is not asked for. burrow runs as the unprivileged test user."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.rootless

PY = "/usr/bin/python3"
CONNECT = ("import socket,sys;c=socket.create_connection((sys.argv[1],int(sys.argv[2])),5);"
           "print(c.recv(10).decode())")


@pytest.fixture
def server6() -> Iterator[socket.socket]:
    try:
        srv = socket.socket(socket.AF_INET6)
        srv.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"environment: no IPv6 loopback on this host ({e.strerror})")
    srv.listen(4)
    srv.settimeout(10)
    yield srv
    srv.close()


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"environment: {tool} is not installed")


@pytest.mark.parametrize("connector", ["slirp4netns", "pasta"])
def test_egress_v6_to_host_loopback(rl: Any, server6: socket.socket, connector: str) -> None:
    _need(connector)
    port = server6.getsockname()[1]
    rl.burrow("--connector", connector, "--allow-host-loopback", "sandbox", "create", "eg6",
              check=True, timeout=60)
    st = json.loads(rl.burrow("status", "--format", "json", check=True).out)
    host6 = st["connector"]["host_v6"]
    if host6 is None:
        pytest.skip(f"environment: {connector} has no IPv6 gateway here (the host has no "
                    "IPv6 default route for it to copy)")
    p = rl.popen(["burrow", "exec", "eg6", "--", PY, "-c", CONNECT, host6, str(port)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        conn, peer = server6.accept()
    except TimeoutError:
        p.kill()
        out, err = p.communicate(timeout=10)
        raise AssertionError(f"{connector}: no connection from [{host6}]:{port}: {err}") from None
    conn.sendall(b"hello6")
    conn.close()
    out, err = p.communicate(timeout=10)
    assert out.strip() == "hello6", err
    assert peer[0] == "::1"


def test_v6_host_loopback_closed_by_default(rl: Any, server6: socket.socket) -> None:
    _need("slirp4netns")
    port = server6.getsockname()[1]
    rl.burrow("--connector", "slirp4netns", "sandbox", "create", "eg6", check=True, timeout=60)
    res = rl.burrow("exec", "eg6", "--", PY, "-c", CONNECT, "fd00::2", str(port), timeout=30)
    assert res.rc != 0
    server6.settimeout(0.5)
    with pytest.raises(TimeoutError):
        server6.accept()
