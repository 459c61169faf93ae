"""The DNS server of a config dir runs in another network namespace than the setup's.

Rootless Podman makes a new rootless netns when its last container has gone. A server kept
alive past that (by records no teardown removed: tests/integration/test_dns_stale_records.py
has the case that did it) answered the next setup's reload from the dropped netns, so no
container of the new one could resolve a name (aardvark-dns 1.4 with netavark 1.4 the same).
The engine now stops that server and starts one in the setup's netns. Two throwaway "host"
namespaces share one config dir, as Podman's old and new rootless netns share the user's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options, wait_for
from tests.integration.test_dns_support import alive
from tests.nsutil import VENV_BIN, Netns, have, unique

pytestmark = pytest.mark.root


def test_a_server_left_in_a_dropped_netns_is_replaced_by_one_in_the_setups(
    netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    if not have("dig"):
        pytest.skip("environment: needs dig")
    old_host, new_host = netns_factory(), netns_factory()
    cfg = tmp_path / "cfg"
    env = {"BURROW_DNS_RESOLV_CONF": "/dev/null"}
    dns = str(VENV_BIN / "burrow-dns")
    old = World(old_host, cfg, "none", aardvark=dns, env=env)
    new = World(new_host, cfg, "none", aardvark=dns, env=env)
    net = network(unique("n"), unique("bm"), [("10.79.12.0/24", "10.79.12.1")], dns_enabled=True)
    left = netns_factory()
    old.setup(left, options("left", [(net, {"interface_name": "eth0", "static_ips": ["10.79.12.2"]})]))
    pid = int((cfg / "aardvark-dns" / "aardvark.pid").read_text())
    # `left` is never torn down: its record keeps that server running in old_host.
    ctr = netns_factory()
    o = options("newbie", [(net, {"interface_name": "eth0", "static_ips": ["10.79.12.3"]})])
    new.setup(ctr, o)

    def dig(name: str) -> str:
        return ctr.run(["dig", "+short", "+time=1", "+tries=2", "@10.79.12.1", name],
                       check=False).stdout.strip()

    assert wait_for(lambda: dig("newbie") == "10.79.12.3"), "no DNS server in the setup's netns"
    assert wait_for(lambda: not alive(pid)), "the server of the dropped netns still runs"
    now = int((cfg / "aardvark-dns" / "aardvark.pid").read_text())
    assert now != pid and alive(now)
    assert Path(f"/proc/{now}/ns/net").stat().st_ino == Path(new_host.path).stat().st_ino
    new.teardown(ctr, o)
    # the bridge in the setup's netns went with its last port: the file, and the server, too
    assert wait_for(lambda: not alive(now))


def test_only_this_dirs_server_in_another_netns_counts(
    netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """A recycled pid (a process whose command line does not name the dir) is never
    stopped, nor is a server of this netns."""
    from netns.dns.elsewhere import serves_elsewhere

    other = netns_factory()
    d = tmp_path / "aardvark-dns"
    stranger = other.popen(["sleep", "60"])
    ours = other.popen(["sh", "-c", "sleep 60; :", "burrow-dns", "--config", str(d)])
    here = os.stat("/proc/self/ns/net").st_ino

    def entered(pid: int) -> bool:  # nsenter has joined the netns and exec'd the command
        return (os.stat(f"/proc/{pid}/ns/net").st_ino != here
                and not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nsenter"))

    try:
        assert wait_for(lambda: entered(stranger.pid) and entered(ours.pid))
        assert not serves_elsewhere(stranger.pid, d)
        assert serves_elsewhere(ours.pid, d)
        assert not serves_elsewhere(ours.pid, tmp_path / "another")
        assert not serves_elsewhere(os.getpid(), d)  # this netns
        assert not serves_elsewhere(2**22 + 1, d)  # no such process
    finally:
        for p in (stranger, ours):
            p.kill()
            p.wait()
