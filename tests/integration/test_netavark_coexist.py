"""burrow and Debian's netavark 1.4 (iptables driver) sharing one host netns and config dir.

Each tool sets up one container with a published port on the same network; each then tears
down the other's container, in both orders. The port of the container still up keeps working
(real TCP through the DNAT, from another netns), each tool's teardown of the other's container
succeeds, and at the end the tables are exactly what netavark alone leaves after the same
containers come and go (its base chains stay, nothing else).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import World, network, options, port, start_server
from tests.nsutil import Netns, have, unique

NETAVARK = Path("/usr/lib/podman/netavark")
pytestmark = pytest.mark.skipif(
    not NETAVARK.exists() or not have("iptables-save"),
    reason="environment: Debian's netavark 1.4 (/usr/lib/podman/netavark) or iptables missing",
)
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print(s.recv(100).decode())
"""


def netavark(host: Netns, cfg: Path, command: str, ctr: Netns, opts: dict[str, Any]
             ) -> subprocess.CompletedProcess[str]:
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NETAVARK_FW=iptables"]
    return host.run([*env, str(NETAVARK), "--config", str(cfg), "--rootless", "false", command,
                     ctr.path], input=json.dumps(opts), check=False)


def tables(host: Netns) -> str:
    """Both families' tables, without counters and comments lines (they vary run to run)."""
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        text = host.run([tool]).stdout
        out += [re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines()
                if not line.startswith("#")]
    return "\n".join(out)


class Rig:
    """A host netns with an "out" netns on a veth, and one network both tools use."""

    def __init__(self, factory: Callable[[], Netns], tmp: Path, isolate: str,
                 bridge: str | None = None) -> None:
        self.factory = factory
        self.host, self.out = factory(), factory()
        self.cfg = tmp / "cfg"
        self.burrow = World(self.host, self.cfg, "iptables")
        link = unique("bwo")
        self.host.run(["sh", "-ec", f"ip link add {link} type veth peer name eth0 netns "
                       f"{self.out.pid}; ip addr add 172.31.0.1/24 dev {link}; "
                       f"ip link set {link} up"])
        self.out.run(["sh", "-ec", "ip addr add 172.31.0.2/24 dev eth0; ip link set eth0 up"])
        self.net = network("bwnet", bridge or unique("bwc"), [("10.89.40.0/24", "10.89.40.1")],
                           options={"isolate": isolate})
        self.net["id"] = "b" * 64

    def container(self, num: int, host_port: int) -> tuple[Netns, dict[str, Any]]:
        ctr = self.factory()
        opts = options(f"c{num}", [(self.net, {"interface_name": "eth0",
                                               "static_ips": [f"10.89.40.{num}"]})],
                       [port(host_port, 80)])
        opts["container_id"] = f"{num:064x}"
        start_server(ctr, 80, reply=f"c{num}")
        return ctr, opts

    def run(self, tool: str, command: str, ctr: Netns, opts: dict[str, Any]) -> None:
        if tool == "burrow":
            self.burrow.netavark(command, ctr, opts)
        else:
            res = netavark(self.host, self.cfg, command, ctr, opts)
            assert res.returncode == 0, f"netavark {command}: {res.stdout} {res.stderr}"

    def fetch(self, host_port: int) -> str:
        res = self.out.run(["python3", "-c", CLIENT, "172.31.0.1", str(host_port)], check=False)
        return res.stdout.strip() if res.returncode == 0 else "FAILED"


def netavark_alone(factory: Callable[[], Netns], tmp: Path, isolate: str) -> str:
    """What netavark 1.4 leaves after the same two containers come and go."""
    rig = Rig(factory, tmp / "alone", isolate)
    (a, oa), (b, ob) = rig.container(2, 18080), rig.container(3, 18081)
    for ctr, opts in ((a, oa), (b, ob)):
        rig.run("netavark", "setup", ctr, opts)
    for ctr, opts in ((a, oa), (b, ob)):
        rig.run("netavark", "teardown", ctr, opts)
    return tables(rig.host)


@pytest.mark.parametrize("isolate", ["false", "true"])
@pytest.mark.parametrize("first", ["netavark", "burrow"])
def test_two_tools_one_network(netns_factory: Callable[[], Netns], tmp_path: Path,
                               first: str, isolate: str) -> None:
    second = "burrow" if first == "netavark" else "netavark"
    rig = Rig(netns_factory, tmp_path, isolate)
    (a, oa), (b, ob) = rig.container(2, 18080), rig.container(3, 18081)
    rig.run(first, "setup", a, oa)
    assert rig.fetch(18080) == "c2 80"
    rig.run(second, "setup", b, ob)
    # Both published ports work, whoever set them up.
    assert rig.fetch(18080) == "c2 80"
    assert rig.fetch(18081) == "c3 80"
    # The second tool tears down the first tool's container: only that port goes.
    rig.run(second, "teardown", a, oa)
    assert rig.fetch(18080) == "FAILED"
    assert rig.fetch(18081) == "c3 80"
    # The first tool tears down the second tool's (last) container: the network goes.
    rig.run(first, "teardown", b, ob)
    assert rig.fetch(18081) == "FAILED"
    assert tables(rig.host) == netavark_alone(netns_factory, tmp_path, isolate)


def test_burrow_layout_is_netavarks(netns_factory: Callable[[], Netns], tmp_path: Path) -> None:
    """Rule for rule, in the same chains and order, what netavark 1.4 writes for a container."""
    got = {}
    for tool in ("burrow", "netavark"):
        rig = Rig(netns_factory, tmp_path / tool, "true", bridge="bwclayout")
        a, oa = rig.container(2, 18080)
        rig.run(tool, "setup", a, oa)
        got[tool] = tables(rig.host)
    assert got["burrow"] == got["netavark"]
