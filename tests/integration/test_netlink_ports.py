"""A bridge's ports come from a link dump the kernel filters by master (teardown's "is this the
last port?" question), read without decoding (netns/linkdump.py): listing and decoding links made
teardown grow with the number of containers (scripts/bench scale, N = 500)."""

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


def test_a_bridge_with_many_ports_spans_several_replies(host_ns: Netns) -> None:
    """60 ports: the dump comes in several datagrams (~1.4 KB a link, 32 KB a datagram)."""
    cmds = ["link add brm type bridge"]
    cmds += [f"link add m{i} master brm type veth peer name q{i}" for i in range(60)]
    host_ns.run(["ip", "-b", "-"], input="\n".join(cmds) + "\n")
    want = sorted(link["ifindex"] for link in host_ns.links() if link.get("master") == "brm")
    assert len(want) == 60
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            h = Handles(None)
        with h:
            bridge = h.host.link_lookup(ifname="brm")[0]
            assert sorted(h._ports(bridge)) == want
            assert sorted(h._ports(bridge)) == want  # the socket serves a second dump
    finally:
        os.close(fd)
