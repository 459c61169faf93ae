"""IPv4 sysctls go over rtnetlink, not /proc/sys (netns/devconf.py).

A /proc/sys/net path is looked up past the "net" directory of every namespace whose /proc/sys
was ever opened, so each open grows with the containers, and each container whose own sysctls
were written there adds one more. A setup on an existing bridge (the common case at scale)
must therefore write nothing through /proc/sys on the IPv4 path, and still leave every value
as before; when rtnetlink refuses, /proc/sys is still written. (The container's IPv6 side has
no rtnetlink way: those few are written after one lookup of their directory.)
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from netns import devconf, linkdump, netavark_cli, netlink
from netns.nsenter import entered
from tests.engine_util import network, options
from tests.nsutil import Netns, unique


@contextmanager
def inside(ns: Netns) -> Iterator[None]:
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            yield
    finally:
        os.close(fd)


def setup(config: Path, ctr: Netns, opts: dict[str, Any]) -> None:
    argv = ["--rootless=false", "--firewall-driver=nftables", "--aardvark-binary=/nonexistent",
            "--config", str(config), "setup", ctr.path]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": ""}
    out, err, code = netavark_cli.run(argv, json.dumps(opts).encode(), env)
    assert code == 0, (out, err)


# A managed bridge port's IPv6 side (netlink.QUIET_PORT_V6): no rtnetlink way exists; these
# are written relative to one lookup of the interface's directory.
QUIET = ["net/ipv6/conf/eth0/autoconf",  # on every network, as netavark (differential test)
         "net/ipv6/conf/eth0/router_solicitations", "net/ipv6/conf/eth0/accept_dad"]


@pytest.fixture
def proc_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the engine writes through /proc/sys (the writes still happen); one written
    relative to an open directory (no lookup from /proc/sys down) is marked "(in dir)"."""
    written: list[str] = []
    real = netlink._write_proc_sys

    def spy(path: str, value: str, conf_dir: int | None = None, proc: int | None = None) -> None:
        written.append(path if conf_dir is None else f"{path} (in dir)")
        real(path, value, conf_dir, proc)

    monkeypatch.setattr(netlink, "_write_proc_sys", spy)
    return written


def _two_containers(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, written: list[str]
) -> tuple[str, Netns, list[str]]:
    br = unique("se")
    net = network(br, br, [("10.93.0.0/24", "10.93.0.1")])
    ctrs = [netns_factory(), netns_factory()]
    port = {"host_ip": "", "container_port": 80, "host_port": 18080, "range": 1, "protocol": "tcp"}
    with inside(host_ns):
        setup(tmp_path, ctrs[0], options("c0", [(net, {"interface_name": "eth0",
                                                       "static_ips": ["10.93.0.2"]})], [port]))
        first = list(written)
        written.clear()
        port = {**port, "host_port": 18081}
        setup(tmp_path, ctrs[1], options("c1", [(net, {"interface_name": "eth0",
                                                       "static_ips": ["10.93.0.3"]})], [port]))
    return br, ctrs[1], first


def test_a_setup_on_an_existing_bridge_writes_nothing_through_proc_sys(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, proc_writes: list[str]
) -> None:
    br, ctr, first = _two_containers(host_ns, netns_factory, tmp_path, proc_writes)
    # The first setup found ip_forward off (a fresh netns): that one is written the old way.
    assert first == ["net/ipv4/ip_forward", *(f"{p} (in dir)" for p in QUIET)]
    assert proc_writes == [f"{p} (in dir)" for p in QUIET]
    assert host_ns.sysctl("net/ipv4/ip_forward") == "1"
    assert host_ns.sysctl(f"net/ipv4/conf/{br}/route_localnet") == "1"
    assert host_ns.sysctl(f"net/ipv4/conf/{br}/rp_filter") == "2"
    assert ctr.sysctl("net/ipv4/conf/eth0/arp_notify") == "1"
    assert ctr.sysctl("net/ipv4/conf/eth0/rp_filter") == "2"


def test_ipv6_forwarding_is_written_only_when_it_is_off(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, proc_writes: list[str]
) -> None:
    """As ip_forward: RTM_GETNETCONF (AF_INET6, "all") reads it; a setup that finds it on
    leaves it (writing it again walks every interface under the RTNL lock)."""
    br = unique("se")
    net = network(br, br, [("10.94.0.0/24", "10.94.0.1"), ("fd94::/64", "fd94::1")])
    with inside(host_ns):
        for i in (2, 3):
            if i == 3:
                first = list(proc_writes)
                proc_writes.clear()
            setup(tmp_path, netns_factory(), options(f"c{i}", [(net, {
                "interface_name": "eth0", "static_ips": [f"10.94.0.{i}", f"fd94::{i}"]})]))
    assert "net/ipv6/conf/all/forwarding" in first
    assert "net/ipv6/conf/all/forwarding" not in proc_writes, proc_writes
    assert host_ns.sysctl("net/ipv6/conf/all/forwarding") == "1"


def test_when_rtnetlink_refuses_the_values_are_written_through_proc_sys(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path,
    proc_writes: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def refuse(*_a: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "refused by the test")

    monkeypatch.setattr(devconf, "set_ipv4_conf", refuse)
    br, ctr, first = _two_containers(host_ns, netns_factory, tmp_path, proc_writes)
    # The bridge's, when the first setup made it; the second finds route_localnet already 1
    # (its lookup read it) and leaves it (test_engine_floods: no state change of the bridge).
    assert {f"net/ipv4/conf/{br}/route_localnet", f"net/ipv4/conf/{br}/rp_filter"} <= set(first)
    assert sorted(proc_writes) == sorted(["net/ipv4/conf/eth0/arp_notify",
                                          "net/ipv4/conf/eth0/rp_filter",
                                          *(f"{p} (in dir)" for p in QUIET)])
    assert host_ns.sysctl(f"net/ipv4/conf/{br}/route_localnet") == "1"
    assert ctr.sysctl("net/ipv4/conf/eth0/arp_notify") == "1"
    assert ctr.sysctl("net/ipv4/conf/eth0/rp_filter") == "2"


def test_devconf_sets_and_reads_what_proc_sys_shows(host_ns: Netns) -> None:
    name = unique("se")
    host_ns.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"])
    index = next(link["ifindex"] for link in host_ns.links() if link["ifname"] == name)
    with inside(host_ns):
        sock = linkdump.open_socket()
    try:
        for arp_notify, rp_filter, localnet in ((1, 2, 1), (0, 1, 0)):
            devconf.set_ipv4_conf(sock, index, {"arp_notify": arp_notify, "rp_filter": rp_filter,
                                                "route_localnet": localnet})
            assert host_ns.sysctl(f"net/ipv4/conf/{name}/arp_notify") == str(arp_notify)
            assert host_ns.sysctl(f"net/ipv4/conf/{name}/rp_filter") == str(rp_filter)
            assert host_ns.sysctl(f"net/ipv4/conf/{name}/route_localnet") == str(localnet)
        for value in ("1", "0"):
            host_ns.run(["sh", "-c", f"echo {value} > /proc/sys/net/ipv4/ip_forward"])
            assert devconf.forwarding(sock) == int(value)
            host_ns.run(["sh", "-c", f"echo {value} > /proc/sys/net/ipv6/conf/all/forwarding"])
            assert devconf.forwarding(sock, socket.AF_INET6) == int(value)
        missing = 1 + max(link["ifindex"] for link in host_ns.links())
        with pytest.raises(OSError) as exc:
            devconf.set_ipv4_conf(sock, missing, {"arp_notify": 1})
        assert exc.value.errno == errno.ENODEV
        # The socket still serves requests after an error (its answer was read).
        devconf.set_ipv4_conf(sock, index, {"arp_notify": 1})
        assert host_ns.sysctl(f"net/ipv4/conf/{name}/arp_notify") == "1"
    finally:
        sock.close()


def _own_procfs() -> int:
    proc = devconf.procfs_instance()
    if proc is None:
        pytest.skip("environment: no procfs can be mounted here (kernel < 5.2, or no "
                    "CAP_SYS_ADMIN over the pid namespace)")
    return proc


def test_an_own_procfs_shows_the_callers_namespace(netns_factory: Callable[[], Netns]) -> None:
    """devconf.procfs_instance: a procfs of one's own, attached nowhere; its sys/ is the
    sysctls of whatever namespace the caller is in at each lookup, as /proc/sys is."""
    a, b = netns_factory(), netns_factory()
    proc = _own_procfs()
    try:
        for ns, value in ((a, "0"), (b, "7")):
            with inside(ns):
                netlink._write_proc_sys("net/ipv6/conf/lo/router_solicitations", value, proc=proc)
    finally:
        os.close(proc)
    assert a.sysctl("net/ipv6/conf/lo/router_solicitations") == "0"
    assert b.sysctl("net/ipv6/conf/lo/router_solicitations") == "7"


def test_a_setup_writes_through_its_own_procfs_or_else_proc(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The sysctls with no rtnetlink way go through the request's own procfs, so their lookups
    do not walk every namespace's "net" under /proc/sys (devconf.py); where none can be made
    (rootless), through /proc, with the same values."""
    os.close(_own_procfs())
    used: list[bool] = []
    real = netlink._write_proc_sys

    def spy(path: str, value: str, conf_dir: int | None = None, proc: int | None = None) -> None:
        used.append(proc is not None)
        real(path, value, conf_dir, proc)

    monkeypatch.setattr(netlink, "_write_proc_sys", spy)
    br = unique("se")
    net = network(br, br, [("10.95.0.0/24", "10.95.0.1"), ("fd95::/64", "fd95::1")])
    with inside(host_ns):
        for i in (2, 3):
            if i == 3:  # as if procfs could not be mounted
                monkeypatch.setattr(devconf, "procfs_instance", lambda: None)
            ctr = netns_factory()
            setup(tmp_path, ctr, options(f"c{i}", [(net, {
                "interface_name": "eth0", "static_ips": [f"10.95.0.{i}", f"fd95::{i}"]})]))
            assert set(used) == {i == 2}, used
            used.clear()
            for key, value in (("autoconf", "0"), ("accept_dad", "0"), ("router_solicitations", "0")):
                assert ctr.sysctl(f"net/ipv6/conf/eth0/{key}") == value
