"""`burrow sandbox rm`, rootless: nothing of the sandbox outlives it.

A removed sandbox's network namespace must be released: no process left running in it (what
`burrow exec` started there is stopped, as `podman rm -f` stops a container), and nothing of
burrow's holding it (the forwarder's dialer once stayed entered in the last netns it dialled
in; the forwarder's sockets into it). The world is kept alive by a second sandbox, as the
last `sandbox rm` stops the whole world and would hide all of this.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import pytest

from tests.integration.test_rootless_sandbox import free_ports, serve, tcp
from tests.rootless_user import netns_holders

pytestmark = pytest.mark.rootless


def _netns_inode(rl: Any, name: str) -> int:
    out = rl.burrow("exec", name, "--", "readlink", "/proc/self/ns/net", check=True).out
    assert out.startswith("net:["), out
    return int(out.strip()[5:-1])


def _released(inode: int, timeout: float = 10) -> list[str]:
    """Who still holds netns `inode` once `timeout` has passed ([] as soon as nobody does):
    the forwarder's Forget reaches its dialer a moment after `sandbox rm` returns."""
    deadline = time.monotonic() + timeout
    while (held := netns_holders(inode)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return held


def test_rm_releases_the_netns_and_the_name_and_port_work_again(rl: Any) -> None:
    base = free_ports(2)
    # Another sandbox with a port of its own keeps the world and the forwarder running.
    rl.burrow("sandbox", "create", "trkeep", "-p", f"127.0.0.1:{base + 1}:80", check=True,
              timeout=60)
    serve(rl, "trkeep", "t:80", "keep")
    rl.burrow("sandbox", "create", "trgone", "-p", f"127.0.0.1:{base}:80", check=True,
              timeout=60)
    server = serve(rl, "trgone", "t:80,e:81", "gone")
    inode = _netns_inode(rl, "trgone")
    assert tcp("127.0.0.1", base) == b"gone:hi"  # the dialer made its sockets in there
    # A connection still open through the port at `rm` (an idle client never closes it).
    held_open = socket.create_connection(("127.0.0.1", base), 5)
    held_open.sendall(b"x")
    try:
        assert netns_holders(inode), "the check sees nothing even while the sandbox lives"
        rl.burrow("sandbox", "rm", "trgone", check=True, timeout=60)
        # What ran inside was stopped, not left holding the namespace.
        assert server.wait(timeout=10) is not None
        assert _released(inode) == []
        # The open connection was closed (reset, or ended) by the forwarder, not left hanging.
        held_open.settimeout(5)
        try:
            assert held_open.recv(100) in (b"", b"gone:x")
        except ConnectionResetError:
            pass
    finally:
        held_open.close()
        if server.poll() is None:
            server.kill()
    # The same name and the same host port work again, into the new namespace.
    rl.burrow("sandbox", "create", "trgone", "-p", f"127.0.0.1:{base}:80", check=True,
              timeout=60)
    serve(rl, "trgone", "t:80", "again")
    assert tcp("127.0.0.1", base) == b"again:hi"
    assert tcp("127.0.0.1", base + 1) == b"keep:hi"  # the other sandbox's port never moved


def test_rm_stops_what_runs_in_the_sandbox_and_spares_others(rl: Any) -> None:
    """`sandbox rm` stops the sandbox's own processes (a child of one too), and nothing else:
    a process of another sandbox of the same world goes on."""
    rl.burrow("sandbox", "create", "trother", check=True, timeout=60)
    rl.burrow("sandbox", "create", "trbusy", check=True, timeout=60)
    other = rl.popen(["burrow", "exec", "trother", "--", "sleep", "300"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    busy = rl.popen(["burrow", "exec", "trbusy", "--", "sh", "-c", "sleep 300 & sleep 300"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        inode = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            inode = _netns_inode(rl, "trbusy")
            if sum("sleep 300" in h for h in netns_holders(inode)) >= 2:
                break
            time.sleep(0.1)
        rl.burrow("sandbox", "rm", "trbusy", check=True, timeout=60)
        assert busy.wait(timeout=10) is not None
        assert _released(inode) == []
        assert other.poll() is None, "a process of another sandbox was stopped"
    finally:
        for p in (other, busy):
            if p.poll() is None:
                p.kill()
