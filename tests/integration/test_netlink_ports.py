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


class _CountingSocket:
    """A real rtnetlink socket that counts the datagrams and bytes read from it."""

    def __init__(self) -> None:
        from netns import linkdump

        self.sock = linkdump.open_socket()
        self.reads = 0
        self.bytes = 0

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def recv_into(self, buf: bytearray) -> int:
        n = self.sock.recv_into(buf)
        self.reads += 1
        self.bytes += n
        return n

    def close(self) -> None:
        self.sock.close()


def _ports_read(host_ns: Netns, tag: str, count: int, limit: int | None) -> tuple[int, int, int]:
    """Make bridge br<tag> with `count` ports; (ports returned, datagrams, bytes) of one query."""
    from netns import linkdump

    cmds = [f"link add br{tag} type bridge"]
    cmds += [f"link add {tag}{i} master br{tag} type veth peer name {tag}p{i}" for i in range(count)]
    host_ns.run(["ip", "-b", "-"], input="\n".join(cmds) + "\n")
    bridge = next(link["ifindex"] for link in host_ns.links() if link["ifname"] == f"br{tag}")
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            sock = _CountingSocket()
        try:
            ports = linkdump.bridge_ports(sock, bridge, limit)  # type: ignore[arg-type]
        finally:
            sock.close()
    finally:
        os.close(fd)
    return len(ports), sock.reads, sock.bytes


def test_a_limited_query_reads_the_same_few_datagrams_whatever_the_ports(host_ns: Netns) -> None:
    """Teardown needs two ports at most: with 150 ports it reads what it reads with 20 (the
    whole dump of 150 is several times that), so its cost does not grow with the containers."""
    few = _ports_read(host_ns, "f", 20, limit=2)
    many = _ports_read(host_ns, "m", 150, limit=2)
    assert few[0] == many[0] == 2
    assert many[1:] == few[1:], (few, many)
    whole = _ports_read(host_ns, "w", 150, limit=None)
    assert whole[0] == 150
    assert whole[2] > 4 * many[2], (whole, many)


def test_after_a_limited_query_the_next_one_gets_a_fresh_socket(host_ns: Netns) -> None:
    """An unfinished dump leaves the socket busy (EBUSY for the next dump): it is replaced."""
    cmds = ["link add brn type bridge"]
    cmds += [f"link add n{i} master brn type veth peer name o{i}" for i in range(40)]
    host_ns.run(["ip", "-b", "-"], input="\n".join(cmds) + "\n")
    want = sorted(link["ifindex"] for link in host_ns.links() if link.get("master") == "brn")
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            h = Handles(None)
            with h:
                bridge = h.host.link_lookup(ifname="brn")[0]
                first = h._ports(bridge, limit=2)
                assert len(first) == 2 and set(first) <= set(want)
                assert h.host_raw is None  # the half-read socket was closed
                assert sorted(h._ports(bridge)) == want
                assert len(h._ports(bridge, limit=100)) == 40  # finished: the socket stays
                assert h.host_raw is not None
    finally:
        os.close(fd)
