"""A DNS record whose container was never torn down must not keep burrow-dns alive.

Rootless Podman 4.3 drops a container whose `rootlessport` failed (a published port already
taken) without a network teardown: its netns goes, its veth with it, its DNS record stays.
With netavark 1.4 + aardvark-dns 1.4 (and burrow before this test) that record kept the DNS
server running after the last container went: a leftover process per such world, and, once
Podman had made a new rootless netns, a server answering reloads from the old one, so no
container of the new one could resolve a name. A teardown that deletes a network's bridge
now drops that network's whole DNS file: no container can be on a bridge network whose
bridge has no port. Throwaway "host" and "container" namespaces, burrow-dns forked by the
engine, as in tests/integration/test_dns_engine.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options, wait_for
from tests.integration.test_dns_support import alive
from tests.nsutil import VENV_BIN, Netns, have, unique

pytestmark = pytest.mark.root

CYCLES = 3


def dns_servers_of(dns_dir: Path) -> list[int]:
    """Live (non-zombie) burrow-dns processes of this config dir, by their title."""
    needle = f"burrow-dns --config {dns_dir} ".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd.startswith(needle) and alive(int(entry)):
            found.append(int(entry))
    return found


def ports_of(host: Netns, bridge: str) -> int:
    out = host.run(["ip", "-j", "link", "show", "master", bridge], check=False).stdout
    return len(json.loads(out or "[]"))


def test_a_container_gone_without_teardown_leaves_no_dns_server_after_the_last_teardown(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """Per cycle: two containers on one DNS network; one's netns goes without a teardown
    (Podman's refused rootlessport); the other's teardown deletes the bridge. Then the
    network's file is gone and no burrow-dns of this config dir runs, cycle after cycle (no
    process accumulates), and the next container's name resolves (a server of this netns)."""
    if not have("dig"):
        pytest.skip("environment: needs dig")
    w = World(host_ns, tmp_path / "cfg", "nftables", aardvark=str(VENV_BIN / "burrow-dns"),
              env={"BURROW_DNS_RESOLV_CONF": "/dev/null"})
    dns_dir = w.config / "aardvark-dns"
    bridge = unique("bs")
    net = network(unique("n"), bridge, [("10.79.9.0/24", "10.79.9.1")], dns_enabled=True)

    def dig(ctr: Netns, name: str) -> str:
        return ctr.run(["dig", "+short", "+time=1", "+tries=2", "@10.79.9.1", name],
                       check=False).stdout.strip()

    for i in range(CYCLES):
        keep, gone = netns_factory(), netns_factory()
        ok = options(f"keep{i}", [(net, {"interface_name": "eth0", "static_ips": ["10.79.9.2"]})])
        lost = options(f"lost{i}", [(net, {"interface_name": "eth0", "static_ips": ["10.79.9.3"]})])
        w.setup(keep, ok)
        w.setup(gone, lost)
        assert wait_for(lambda k=keep, n=f"lost{i}": dig(k, n) == "10.79.9.3")
        gone.close()  # its veth goes with it; no teardown, as Podman after a refused port
        assert wait_for(lambda: ports_of(host_ns, bridge) == 1), "the lost veth stayed"
        w.teardown(keep, ok)
        assert not (dns_dir / net["name"]).exists(), (dns_dir / net["name"]).read_text()
        assert wait_for(lambda: not dns_servers_of(dns_dir)), (
            f"cycle {i}: burrow-dns still runs: {dns_servers_of(dns_dir)}")
        assert not (dns_dir / "aardvark.pid").exists()

    last = netns_factory()
    o = options("after", [(net, {"interface_name": "eth0", "static_ips": ["10.79.9.4"]})])
    w.setup(last, o)
    assert wait_for(lambda: dig(last, "after") == "10.79.9.4")
    assert dig(last, "lost0") == "" and len(dns_servers_of(dns_dir)) == 1
    w.teardown(last, o)
    assert wait_for(lambda: not dns_servers_of(dns_dir))


def test_a_teardown_that_keeps_the_bridge_keeps_the_other_records(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """The whole file goes only with the bridge: while another container is on the network,
    a teardown removes its own record alone and the others still resolve."""
    if not have("dig"):
        pytest.skip("environment: needs dig")
    w = World(host_ns, tmp_path / "cfg", "nftables", aardvark=str(VENV_BIN / "burrow-dns"),
              env={"BURROW_DNS_RESOLV_CONF": "/dev/null"})
    net = network(unique("n"), unique("bs"), [("10.79.10.0/24", "10.79.10.1")], dns_enabled=True)
    a, b = netns_factory(), netns_factory()
    oa = options("first", [(net, {"interface_name": "eth0", "static_ips": ["10.79.10.2"]})])
    ob = options("second", [(net, {"interface_name": "eth0", "static_ips": ["10.79.10.3"]})])
    w.setup(a, oa)
    w.setup(b, ob)
    w.teardown(a, oa)

    def dig(name: str) -> str:
        return b.run(["dig", "+short", "+time=1", "+tries=2", "@10.79.10.1", name],
                     check=False).stdout.strip()

    assert wait_for(lambda: dig("second") == "10.79.10.3")
    assert dig("first") == ""
    w.teardown(b, ob)
    assert wait_for(lambda: not dns_servers_of(w.config / "aardvark-dns"))
