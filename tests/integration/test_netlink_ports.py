"""A bridge's ports come from a link dump the kernel filters by master (teardown's "is this the
last port?" question), not from every link on the host: that listing made teardown grow with the
number of containers (scripts/bench scale, N = 500: 72 -> 1358 ms per call)."""

from __future__ import annotations

import os

from netns.netlink import Handles
from netns.nsenter import entered
from tests.nsutil import Netns


def test_ports_are_exactly_the_bridges_ports_among_many_links(host_ns: Netns) -> None:
    cmds = ["link add bra type bridge", "link add brb type bridge"]
    cmds += [f"link add v{i} type veth peer name p{i}" for i in range(6)]
    cmds += ["link set v0 master bra", "link set v1 master bra", "link set v2 master brb"]
    host_ns.run(["ip", "-b", "-"], input="\n".join(cmds) + "\n")
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            h = Handles(None)
        with h:
            index = {name: h.host.link_lookup(ifname=name)[0]
                     for name in ("bra", "brb", "v0", "v1", "v2", "v3")}
            assert sorted(h._ports(index["bra"])) == sorted([index["v0"], index["v1"]])
            assert h._ports(index["brb"]) == [index["v2"]]
            host_ns.run(["ip", "link", "set", "v2", "nomaster"])
            assert h._ports(index["brb"]) == []
            # A link that is no bridge has no ports (and the answer is not "every link").
            assert h._ports(index["v3"]) == []
    finally:
        os.close(fd)
