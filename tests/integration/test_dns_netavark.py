"""Interop: Debian's netavark 1.4 drives burrow-dns through `--aardvark-binary`.

netavark execs `<bin> --config <dir>/aardvark-dns -p <NETAVARK_DNS_PORT> run` on the first
setup, SIGHUPs it on later changes, and deletes the network file on the last teardown, after
which burrow-dns must exit by itself. A non-53 port also exercises netavark's DNAT 53 -> port.
Everything runs in throwaway "host" and "container" namespaces (spec/netavark.md §2.8, §9).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_dns_support import BURROW_DNS, alive, wait_dead
from tests.nsutil import Netns, have, unique

pytestmark = pytest.mark.root

NETAVARK = "/usr/lib/podman/netavark"
PORT = 5354


def options(net: str, bridge: str, cid: str, name: str, ip: str, alias: str) -> dict[str, object]:
    return {
        "container_id": cid,
        "container_name": name,
        "networks": {net: {"static_ips": [ip], "aliases": [alias], "interface_name": "eth0"}},
        "network_info": {net: {
            "name": net, "id": "3f" * 32, "driver": "bridge", "network_interface": bridge,
            "subnets": [{"subnet": "10.89.77.0/24", "gateway": "10.89.77.1"}],
            "ipv6_enabled": False, "internal": False, "dns_enabled": True,
            "options": {}, "ipam_options": {"driver": "host-local"},
        }},
    }


def test_netavark_14_with_burrow_dns(netns_factory: Callable[[], Netns], tmp_path: Path) -> None:
    if not os.path.exists(NETAVARK) or not have("dig"):
        pytest.skip("environment: needs Debian's netavark 1.4 and dig")
    host, c1, c2 = netns_factory(), netns_factory(), netns_factory()
    net, bridge = unique("dn"), unique("dn")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")  # external names: nowhere to go, so nothing leaves the namespaces
    wrapper = tmp_path / "burrow-dns-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"BURROW_DNS_RESOLV_CONF={resolv} exec {BURROW_DNS} \"$@\""
        f" --log-file {tmp_path / 'dns.log'}\n"
    )
    wrapper.chmod(0o755)
    cfg = tmp_path / "nv"
    cfg.mkdir()
    env = {**os.environ, "NETAVARK_DNS_PORT": str(PORT), "NETAVARK_FW": "iptables"}

    def netavark(verb: str, ctr: Netns, opts: dict[str, object]) -> dict[str, object]:
        path = tmp_path / f"{verb}-{ctr.pid}.json"
        path.write_text(json.dumps(opts))
        res = host.run([NETAVARK, "--config", str(cfg), "--aardvark-binary", str(wrapper),
                        "-f", str(path), verb, ctr.path], env=env, check=False)
        assert res.returncode == 0, f"netavark {verb}: {res.stdout} {res.stderr}"
        return json.loads(res.stdout) if res.stdout.strip() else {}

    o1 = options(net, bridge, "a1" * 32, "web1", "10.89.77.2", "web")
    o2 = options(net, bridge, "b2" * 32, "db1", "10.89.77.3", "db")
    status = netavark("setup", c1, o1)
    assert status[net]["dns_server_ips"] == ["10.89.77.1"]  # type: ignore[index]
    pid = int((cfg / "aardvark-dns" / "aardvark.pid").read_text())
    assert alive(pid)
    # netavark's argv reached us, and the process title says so (setproctitle: one string)
    cmdline = Path(f"/proc/{pid}/cmdline").read_text().strip("\0")
    assert cmdline == f"burrow-dns --config {cfg / 'aardvark-dns'} -p {PORT} run"
    netavark("setup", c2, o2)  # second container: netavark only SIGHUPs the running server
    assert int((cfg / "aardvark-dns" / "aardvark.pid").read_text()) == pid

    def dig(ctr: Netns, *args: str) -> str:
        return ctr.run(["dig", "+short", "+time=2", "+tries=2", "@10.89.77.1", *args]).stdout.split()

    try:
        assert dig(c1, "db1") == ["10.89.77.3"]  # through netavark's DNAT 53 -> 5354
        assert dig(c1, "DB.dns.podman") == ["10.89.77.3"]
        assert dig(c2, "web") == ["10.89.77.2"]
        # netavark 1.4's DNAT covers UDP only (aardvark 1.4 had no TCP): TCP goes to the port
        assert dig(c2, "+tcp", "-p", str(PORT), "web1") == ["10.89.77.2"]
        assert dig(c2, "-p", str(PORT), "web1.dns.podman") == ["10.89.77.2"]
        assert dig(c1, "-x", "10.89.77.3") == ["db1.", "db."]
    finally:
        netavark("teardown", c2, o2)
    # Removing c2's veth can change the bridge's MAC (1.4 does not pin it), and c1 would keep
    # sending to the stale one for seconds: refresh c1's neighbour cache first.
    c1.run(["ip", "neigh", "flush", "all"])
    # gone after netavark's SIGHUP (asked on the port itself: 1.4's teardown may drop the DNAT)
    assert dig(c1, "-p", str(PORT), "db1.dns.podman") == []
    assert dig(c1, "-p", str(PORT), "web1.dns.podman") == ["10.89.77.2"]
    assert alive(pid)
    netavark("teardown", c1, o1)  # last container: file removed, SIGHUP, server exits itself
    assert wait_dead(pid)
    assert not (cfg / "aardvark-dns" / "aardvark.pid").exists()
