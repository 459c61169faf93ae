"""The kernel's floor under issue 15's setup rows: burrow's kernel objects, made by a minimal client.

Per container, the same objects as a burrow setup of `bench_scale.py`'s shapes, in netavark's
layout: a veth pair into the container's fresh netns (the host end named by the kernel, a port
of the bridge in burrow's device group, hairpin on, no IPv6 addresses), the container's sysctls
(router_solicitations=0, accept_dad=0, autoconf=0; dual: accept_dad=0 on the host end), its
addresses, lo up, eth0 up with rp_filter=2 and arp_notify=1 in that request (after the up), the two seeded neighbours (gateway -> bridge, address
-> container), the default route(s), and the port's rules in `inet netavark` (the jump in
NETAVARK-HOSTPORT-DNAT, the mark and dnat rules in the subnet's `_dnat` chain). The client is
this process: pyroute2 requests on two sockets kept open, sysctls through a private procfs
(fsopen, as burrow does: /proc/sys lookups grow with the namespaces), and one libnftables
call of `nft -f` text. No burrow code runs in it. The bridge, the base rules and the
network's rules (and burrow's MLD filter table) are made once before the first container,
untimed.

Each row is the time of a setup, medians of the first 10 -> last 10 of N, their ratio and their
difference in ms, side by side with burrow (`burrow-netavark setup` exec'd, as bench_scale.py
times it) in one run. Variants attribute the floor's growth:
- `floor`: the objects above;
- `floor arp_notify=0`: arp_notify left 0 (burrow sets it with the up, so no gratuitous ARP
  is sent either way: this row should equal `floor`);
- `floor arp_notify first` (`garp`): arp_notify=1 and rp_filter=2 written before the link
  comes up (burrow before issue 15's fix): the kernel's gratuitous ARP at that link-up, which
  the v4 shape's port (up in the request that made it) floods to all N ports;
- `floor vmap`: the per-port jump rules replaced by one verdict map element each (one rule
  `meta nfproto . meta l4proto . th dport vmap @nv_hostports` in NETAVARK-HOSTPORT-DNAT): not netavark's
  layout, for attribution only;
- `floor no nft`: no rules in `inet netavark` (the links' share);
- `floor MLD reports flooded` (`mldflood`): without burrow's MLD filter (netns/mldquiet.py:
  the device group on the bridge and its ports, the `bridge burrow_quiet` table), so each
  container's 4 MLD reports reach all N ports, as before burrow had it;
- `floor force_mld_version=1` (`mldv1`): MLDv1 in the containers (fewer reports, v4 shape);
- `floor no jump` (`nojump`): the port's rules without a jump verdict (one jump per subnet
  made with the network, the mark set inline): the commit still validates the table (a
  dnat or mark statement sets the same flag), so it grows the same;
- `floor eth0 no ipv6` (`v6off`): no IPv6 on eth0, so no MLD at all (IPv4 shape only).
Parts combine with "+" (`arp0+mldflood`). `--flood-cost` measures what one flooded frame
costs at N ports (an MLD report with and without the filter, a gratuitous ARP).
The floor's growth in ms is what no client can avoid with this layout: if it exceeds 0.3x
burrow's first-10 median, a last/first <= 1.3 is out of reach for any client. `--check` makes
two containers both ways and compares the rulesets, routes and sysctls (the floor builds what
burrow builds).

Run: sudo .venv/bin/python scripts/bench_scale_floor.py [--n 500] [--shape v4|dual]
     [--variant floor|arp0|vmap|nonft|mldv1|mldflood|nojump|v6off|A+B]... [--repeat R]
     [--no-burrow] [--check]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The floor is the client burrow is measured against, so it may not be burrow's netlink.py.
from pyroute2 import IPRoute  # noqa: E402, TID251

from scripts.bench_scale import NET_ID, burrow_tool, medians, options, run_tool, wait_quiet  # noqa: E402
from tests.nsutil import VENV_BIN, Netns  # noqa: E402

CLONE_NEWNET = 0x40000000
NUD_STALE = 0x04
RTPROT_STATIC = 4
METRIC = 100
BRIDGE = "bwscale0"
V4_NET, V4_GW = "10.89.0.0/16", "10.89.255.254"
V6_NET, V6_GW = "fd89::/64", "fd89::ffff"
CHAIN4 = f"nv_{NET_ID[:8]}_10_89_0_0_nm16"
CHAIN6 = f"nv_{NET_ID[:8]}_fd89--_nm64"
# A variant is one of these or several joined by "+" (e.g. `mldv1+arp0`).
VARIANTS = {"floor": "floor", "arp0": "floor arp_notify=0", "garp": "floor arp_notify first",
            "vmap": "floor vmap",
            "nonft": "floor no nft", "mldv1": "floor force_mld_version=1",
            "mldflood": "floor MLD reports flooded", "nojump": "floor no jump",
            "v6off": "floor eth0 no ipv6"}
# As netns/mldquiet.py (the floor runs no burrow code; --check compares the objects).
QUIET_GROUP, MLD_TABLE = 0x6275, "burrow_quiet"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(fd: int, home: int) -> Iterator[None]:
    setns(fd)
    try:
        yield
    finally:
        setns(home)


def procfs() -> int:
    """A procfs of our own, attached nowhere (fsopen/fsconfig/fsmount)."""
    fs = int(_libc.syscall(430, b"proc", 1))
    if fs < 0:
        raise OSError(ctypes.get_errno(), "fsopen proc")
    try:
        if _libc.syscall(431, fs, 6, None, None, 0) < 0:
            raise OSError(ctypes.get_errno(), "fsconfig create")
        root = int(_libc.syscall(432, fs, 1, 0))
        if root < 0:
            raise OSError(ctypes.get_errno(), "fsmount")
        return root
    finally:
        os.close(fs)


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def up_with_ipv4_conf(sock: socket.socket, index: int, conf: dict[int, int]) -> None:
    """One RTM_SETLINK: link `index` up and IPV4_DEVCONF_* values set, applied after the up
    (as burrow's netns/netlink.py `_up`: no gratuitous ARP at the link-up)."""
    nested = 0x8000
    body = b"".join(_attr(k, struct.pack("=I", v)) for k, v in conf.items())
    spec = _attr(26 | nested, _attr(socket.AF_INET | nested, _attr(1 | nested, body)))
    msg = struct.pack("=BxHiII", 0, 0, index, 1, 1) + spec  # IFF_UP in flags and change
    sock.send(struct.pack("=IHHII", 16 + len(msg), 19, 0x5, 1, 0) + msg)  # RTM_SETLINK, ACK
    reply = sock.recv(65536)
    code = struct.unpack_from("=i", reply, 16)[0]
    if code:
        raise OSError(-code, os.strerror(-code))


def write_sysctls(proc: int, values: dict[str, str]) -> None:
    for path, value in values.items():
        fd = os.open(f"sys/{path}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


class Nft:
    """`nft -f` in-process (libnftables), text input."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libnftables.so.1")
        self.lib.nft_ctx_new.restype = ctypes.c_void_p
        self.lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        self.lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        self.lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        self.lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.ctx = self.lib.nft_ctx_new(0)
        self.lib.nft_ctx_buffer_error(self.ctx)

    def run(self, text: str) -> None:
        if self.lib.nft_run_cmd_from_buffer(self.ctx, text.encode()):
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode()
            raise RuntimeError(f"nft: {err}\n{text}")


def base_ruleset(dual: bool, vmap: bool) -> str:
    """The table, the base rules and the network's rules (burrow's first setup makes these)."""
    out = ["add table inet netavark"]
    for name, kind, hook, prio in (("INPUT", "filter", "input", 0),
                                   ("FORWARD", "filter", "forward", 0),
                                   ("POSTROUTING", "nat", "postrouting", 100),
                                   ("PREROUTING", "nat", "prerouting", -100),
                                   ("OUTPUT", "nat", "output", -100)):
        out.append(f"add chain inet netavark {name} {{ type {kind} hook {hook} priority {prio}; "
                   "policy accept; }")
    for name in ("NETAVARK-HOSTPORT-DNAT", "NETAVARK-HOSTPORT-SETMARK", "NETAVARK-ISOLATION-1",
                 "NETAVARK-ISOLATION-2", "NETAVARK-ISOLATION-3"):
        out.append(f"add chain inet netavark {name}")
    r = "add rule inet netavark"
    out += [f"{r} POSTROUTING meta mark & 0x2000 == 0x2000 masquerade",
            f"{r} NETAVARK-HOSTPORT-SETMARK meta mark set meta mark | 0x2000",
            f"{r} PREROUTING fib daddr type local jump NETAVARK-HOSTPORT-DNAT",
            f"{r} OUTPUT fib daddr type local jump NETAVARK-HOSTPORT-DNAT",
            f"{r} FORWARD ct state invalid drop",
            f"{r} FORWARD ct mark & 0x1000 == 0x1000 accept",
            f"{r} FORWARD jump NETAVARK-ISOLATION-1",
            f"{r} NETAVARK-ISOLATION-3 jump NETAVARK-ISOLATION-2",
            f'{r} NETAVARK-ISOLATION-1 iifname "{BRIDGE}" oifname != "{BRIDGE}" '
            "jump NETAVARK-ISOLATION-3",
            f'{r} NETAVARK-ISOLATION-2 oifname "{BRIDGE}" drop']
    subnets = [("ip", CHAIN4, V4_NET, "224.0.0.0/4")]
    if dual:
        subnets.append(("ip6", CHAIN6, V6_NET, "ff00::/8"))
    for fam, chain, net, mcast in subnets:
        out += [f"add chain inet netavark {chain}",
                f"{r} {chain} {fam} daddr {net} accept",
                f"{r} {chain} {fam} daddr != {mcast} masquerade",
                f"{r} INPUT {fam} saddr {net} meta l4proto {{ tcp, udp }} th dport 53 accept",
                f"{r} FORWARD {fam} daddr {net} ct state established,related accept",
                f"{r} FORWARD {fam} saddr {net} accept",
                f"{r} POSTROUTING {fam} saddr {net} jump {chain}"]
    out += [f"add chain inet netavark {chain}_dnat" for _, chain, _, _ in subnets]
    if vmap:
        out += ["add map inet netavark nv_hostports { type nf_proto . inet_proto . inet_service "
                ": verdict; }",
                f"{r} NETAVARK-HOSTPORT-DNAT meta nfproto . meta l4proto . th dport "
                "vmap @nv_hostports"]
    return "\n".join(out) + "\n"


def variant_flags(variant: str) -> set[str]:
    flags = set(variant.split("+")) - {"floor"}
    unknown = flags - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant part(s): {', '.join(sorted(unknown))}")
    return flags


def variant_label(variant: str) -> str:
    flags = variant_flags(variant)
    return "floor" if not flags else "floor " + ", ".join(
        VARIANTS[f].removeprefix("floor ") for f in sorted(flags))


def mld_drop_ruleset() -> str:
    """MLD reports (v1 131, done 132, v2 143) dropped between two ports in QUIET_GROUP (the
    bridge's forward hook, run for each port's copy of a flooded frame): the bridge itself
    still gets them (local delivery and snooping come before). burrow's netns/mldquiet.py."""
    return (f"add table bridge {MLD_TABLE}\n"
            f"add chain bridge {MLD_TABLE} forward {{ type filter hook forward priority 0; "
            "policy accept; }\n"
            f"add rule bridge {MLD_TABLE} forward meta iifgroup {QUIET_GROUP} meta oifgroup "
            f"{QUIET_GROUP} icmpv6 type {{ mld-listener-report, mld-listener-done, "
            "mld2-listener-report } drop\n")


def nojump_base(dual: bool) -> str:
    """`nojump`: one jump per subnet from NETAVARK-HOSTPORT-DNAT, made with the network."""
    chains = [CHAIN4] + ([CHAIN6] if dual else [])
    return "".join(f"add rule inet netavark NETAVARK-HOSTPORT-DNAT meta nfproto "
                   f"{'ipv4' if c == CHAIN4 else 'ipv6'} jump {c}_dnat\n" for c in chains)


def port_ruleset(i: int, dual: bool, vmap: bool, nojump: bool = False) -> str:
    """One container's port (tcp 20000 + i -> :80), as burrow's setup batch adds it
    (`nojump`: no jump verdict in it; the mark set inline)."""
    port, r = 20000 + i, "add rule inet netavark"
    v4 = f"10.89.{i // 250}.{i % 250 + 2}"
    fams = [("ip", CHAIN4, V4_NET, v4)]
    if dual:
        fams.append(("ip6", CHAIN6, V6_NET, f"[fd89::{i + 2:x}]"))
    out = [f"add chain inet netavark {chain}_dnat" for _, chain, _, _ in fams]
    if nojump:
        for fam, chain, net, addr in fams:
            srcs = [net] + (["127.0.0.1"] if fam == "ip" else [])
            out += [f"{r} {chain}_dnat {fam} saddr {src} tcp dport {port} "
                    "meta mark set meta mark | 0x2000" for src in srcs]
            out.append(f"{r} {chain}_dnat tcp dport {port} ct mark set ct mark | 0x00001000 "
                       f"dnat {fam} to {addr}:80")
        return "\n".join(out) + "\n"
    for fam, chain, net, addr in fams:
        if vmap:
            nfproto = "ipv4" if fam == "ip" else "ipv6"
            out.append(f"add element inet netavark nv_hostports {{ {nfproto} . tcp . {port} : "
                       f"jump {chain}_dnat }}")
        else:
            out.append(f"{r} NETAVARK-HOSTPORT-DNAT tcp dport {port} jump {chain}_dnat")
        out.append(f"{r} {chain}_dnat {fam} saddr {net} tcp dport {port} "
                   "jump NETAVARK-HOSTPORT-SETMARK")
        if fam == "ip":
            out.append(f"{r} {chain}_dnat ip saddr 127.0.0.1 tcp dport {port} "
                       "jump NETAVARK-HOSTPORT-SETMARK")
        out.append(f"{r} {chain}_dnat tcp dport {port} ct mark set ct mark | 0x00001000 "
                   f"dnat {fam} to {addr}:80")
    return "\n".join(out) + "\n"


@dataclass
class Floor:
    """The minimal client in one host netns: its sockets stay open across containers."""

    host: Netns
    dual: bool
    variant: str

    def __post_init__(self) -> None:
        self.flags = variant_flags(self.variant)
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.host_fd = os.open(self.host.path, os.O_RDONLY | os.O_CLOEXEC)
        setns(self.host_fd)  # this thread lives in the host netns until close()
        self.ipr: IPRoute | None = None
        try:
            self._make_network()
        except BaseException:
            self.close()  # back home first: Netns.close kills every process inside
            raise

    def _make_network(self) -> None:
        self.ipr = IPRoute()
        self.nft = Nft()
        self.mac = ":".join(f"{b:02x}" for b in bytes([2]) + os.urandom(5))
        group = {} if "mldflood" in self.flags else {"group": QUIET_GROUP}
        self.ipr.link("add", ifname=BRIDGE, kind="bridge", br_stp_state=0, address=self.mac,
                      state="up", **group)
        self.bridge = self.ipr.link_lookup(ifname=BRIDGE)[0]
        proc = procfs()
        try:
            sysctls = {"net/ipv4/ip_forward": "1", f"net/ipv4/conf/{BRIDGE}/rp_filter": "2",
                       f"net/ipv4/conf/{BRIDGE}/route_localnet": "1"}
            if self.dual:
                sysctls |= {"net/ipv6/conf/all/forwarding": "1",
                            f"net/ipv6/conf/{BRIDGE}/accept_dad": "0",
                            f"net/ipv6/conf/{BRIDGE}/accept_ra": "0"}
            write_sysctls(proc, sysctls)
        finally:
            os.close(proc)
        assert self.ipr is not None
        self.ipr.addr("add", index=self.bridge, address=V4_GW, prefixlen=16)
        if self.dual:
            self.ipr.addr("add", index=self.bridge, address=V6_GW, prefixlen=64)
        if "nonft" not in self.flags:
            self.nft.run(base_ruleset(self.dual, "vmap" in self.flags))
            if "nojump" in self.flags:
                self.nft.run(nojump_base(self.dual))
        if "mldflood" not in self.flags:
            self.nft.run(mld_drop_ruleset())

    def mark(self, step: str) -> None:
        self.marks.append((step, time.perf_counter()))

    def steps(self) -> dict[str, float]:
        """ms per step of the last setup (a step's time runs from the previous mark)."""
        return {name: (t - self.marks[k][1]) * 1000
                for k, (name, t) in enumerate(self.marks[1:])}

    def _before_veth(self, fd: int) -> None:
        """Defaults for eth0, set in the container's netns before eth0 exists. `mldv1`: MLDv1
        (one report per group at once, its repeat up to 10 s later; MLDv2 sends 2 state-change
        reports and 2 initial ones). (MLDv2's robustness, net.ipv6.mld_qrv, would halve them,
        but it is the init netns's only, for the whole host.) `v6off`: no IPv6 on eth0 (no
        MLD at all; attribution only, IPv4 shape)."""
        ctl = {}
        if "mldv1" in self.flags:
            ctl["net/ipv6/conf/default/force_mld_version"] = "1"
        if "v6off" in self.flags:
            ctl["net/ipv6/conf/default/disable_ipv6"] = "1"
        if not ctl:
            return
        proc = procfs()
        try:
            with inside(fd, self.host_fd):
                write_sysctls(proc, ctl)
        finally:
            os.close(proc)
        self.mark("container netns sysctls")

    def close(self) -> None:
        if self.ipr is not None:
            self.ipr.close()
        setns(self.home)
        os.close(self.host_fd)
        os.close(self.home)

    def setup(self, i: int, ctr: Netns) -> float:
        fd = os.open(ctr.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            t0 = time.perf_counter()
            self._setup(i, fd)
            return (time.perf_counter() - t0) * 1000
        finally:
            os.close(fd)

    def _setup(self, i: int, fd: int) -> None:
        v4 = f"10.89.{i // 250}.{i % 250 + 2}"
        v6 = f"fd89::{i + 2:x}"
        dual, ipr = self.dual, self.ipr
        assert ipr is not None
        self.marks = [("", time.perf_counter())]
        with inside(fd, self.host_fd):
            cipr = IPRoute()
        self.mark("container socket")
        try:
            self._before_veth(fd)
            args: dict[str, Any] = {"kind": "veth", "master": self.bridge, "mtu": 1500,
                                    "peer": {"ifname": "eth0", "net_ns_fd": fd, "mtu": 1500}}
            if not dual:
                args["state"] = "up"
            if "mldflood" not in self.flags:
                args["group"] = QUIET_GROUP
            ipr.link("add", **args)
            self.mark("veth add (+ up, v4)")
            eth0 = cipr.link("get", ifname="eth0")[0]
            idx, host_idx = eth0["index"], eth0.get_attr("IFLA_LINK")
            self.mark("eth0 get")
            proc = procfs()
            try:
                if dual:
                    name = ipr.get_links(host_idx)[0].get_attr("IFLA_IFNAME")
                    write_sysctls(proc, {f"net/ipv6/conf/{name}/accept_dad": "0"})
                port = {"IFLA_LINKINFO": {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"), (
                    "IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", 1)]})]},
                        "IFLA_AF_SPEC": {"attrs": [("AF_INET6", {"attrs": [
                            ("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}}
                if dual:
                    port["state"] = "up"
                ipr.link("set", index=host_idx, **port)
                self.mark("host port set (+ up, dual)")
                ctl = {"net/ipv6/conf/eth0/accept_dad": "0", "net/ipv6/conf/eth0/autoconf": "0",
                       "net/ipv6/conf/eth0/router_solicitations": "0"}
                if "garp" in self.flags:  # before the up, as burrow before issue 15's ga
                    ctl["net/ipv4/conf/eth0/arp_notify"] = "1"
                    ctl["net/ipv4/conf/eth0/rp_filter"] = "2"
                with inside(fd, self.host_fd):
                    write_sysctls(proc, ctl)
            finally:
                os.close(proc)
            self.mark("sysctls")
            cipr.addr("add", index=idx, address=v4, prefixlen=16)
            if dual:
                cipr.addr("add", index=idx, address=v6, prefixlen=64)
            self.mark("addresses")
            cipr.link("set", index=1, state="up")
            if "garp" in self.flags:
                cipr.link("set", index=idx, state="up")
            else:  # rp_filter=2 (IPV4_DEVCONF 8) and arp_notify=1 (22) with the up, as burrow
                conf = {8: 2} if "arp0" in self.flags else {8: 2, 22: 1}
                with inside(fd, self.host_fd):
                    raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
                try:
                    up_with_ipv4_conf(raw, idx, conf)
                finally:
                    raw.close()
            self.mark("lo, eth0 up")
            mac = eth0.get_attr("IFLA_ADDRESS")
            cipr.neigh("replace", dst=V4_GW, lladdr=self.mac, ifindex=idx, state=NUD_STALE)
            if dual:
                cipr.neigh("replace", dst=V6_GW, lladdr=self.mac, ifindex=idx, state=NUD_STALE)
            ipr.neigh("replace", dst=v4, lladdr=mac, ifindex=self.bridge, state=NUD_STALE)
            if dual:
                ipr.neigh("replace", dst=v6, lladdr=mac, ifindex=self.bridge, state=NUD_STALE)
            self.mark("neighbours")
            cipr.route("append", dst="0.0.0.0/0", gateway=V4_GW, oif=idx, priority=METRIC,
                       proto=RTPROT_STATIC, family=socket.AF_INET)
            if dual:
                cipr.route("append", dst="::/0", gateway=V6_GW, oif=idx, priority=METRIC,
                           proto=RTPROT_STATIC, family=socket.AF_INET6)
            self.mark("routes")
            if "nonft" not in self.flags:
                self.nft.run(port_ruleset(i, dual, "vmap" in self.flags, "nojump" in self.flags))
                self.mark("nft")
        finally:
            cipr.close()


def run_floor(n: int, dual: bool, variant: str, steps: list[dict[str, float]] | None = None
              ) -> list[float]:
    wait_quiet()
    host = Netns()
    ctrs: list[Netns] = []
    floor = Floor(host, dual, variant)
    times: list[float] = []
    try:
        for i in range(n):
            setns(floor.home)  # make the container's netns from outside, as bench_scale does
            ctrs.append(Netns())
            setns(floor.host_fd)
            times.append(floor.setup(i, ctrs[-1]))
            if steps is not None:
                steps.append(floor.steps())
    finally:
        floor.close()
        for ctr in ctrs:
            ctr.close()
        host.close()
    return times


def row(name: str, times: list[float], burrow_first: float | None) -> str:
    first, last = medians(times)
    extra = "" if burrow_first is None else \
        f"   growth / burrow's first 10: {(last - first) / burrow_first:.2f}"
    return (f"{name:30} setup {first:6.2f} → {last:6.2f} ms (×{last / first:4.2f}, "
            f"+{last - first:5.2f} ms){extra}   load {os.getloadavg()[0]:.1f}")


def step_rows(steps: list[dict[str, float]]) -> str:
    """Per step, medians of the first 10 → last 10 (ms): where the floor's own growth is."""
    cells = []
    for name in steps[0]:
        first = statistics.median(s.get(name, 0.0) for s in steps[:10])
        last = statistics.median(s.get(name, 0.0) for s in steps[-10:])
        cells.append(f"{name} {first:.2f} → {last:.2f}")
    return "    steps: " + ";  ".join(cells)


def shape(n: int, dual: bool, variants: list[str], with_burrow: bool, repeat: int,
          show_steps: bool = False) -> None:
    label = "dual-stack + port (burrow: + DNS)" if dual else "IPv4 + 1 port"
    print(f"\n== {label}, N = {n}: setup medians, first 10 → last 10", flush=True)
    got: dict[str, list[list[float]]] = {}
    for _ in range(repeat):
        burrow_first = None
        if with_burrow:
            run = run_tool(burrow_tool(VENV_BIN.parent, "nftables", False)(dual), n, dual)
            got.setdefault("burrow", []).append(run.setup)
            burrow_first = medians(run.setup)[0]
            print(row("burrow (nftables, exec'd)", run.setup, None), flush=True)
        for v in variants:
            if dual and "v6off" in variant_flags(v):
                continue  # a dual-stack container needs its IPv6
            steps: list[dict[str, float]] = []
            times = run_floor(n, dual, v, steps)
            got.setdefault(v, []).append(times)
            print(row(variant_label(v), times, burrow_first), flush=True)
            if v == "floor" or show_steps:
                print(step_rows(steps), flush=True)
    if repeat > 1:
        for key, runs in got.items():
            g = sorted(medians(t)[1] - medians(t)[0] for t in runs)
            r = sorted(medians(t)[1] / medians(t)[0] for t in runs)
            print(f"{(key if key == 'burrow' else variant_label(key)):30} median of {repeat}: growth +{statistics.median(g):.2f} "
                  f"ms ({', '.join(f'{x:.2f}' for x in g)}), ×{statistics.median(r):.2f}")


def _checksummed_mld_report(src_mac: bytes) -> bytes:
    """A valid MLDv2 report (one record, ff02::1:ff00:1) from fe80::1 to ff02::16, as a
    container's kernel sends on joining a solicited-node group (hop-by-hop router alert)."""
    src, dst = socket.inet_pton(socket.AF_INET6, "fe80::1"), socket.inet_pton(socket.AF_INET6, "ff02::16")
    icmp = bytearray(bytes([143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0])
                     + socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:1"))
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58) + icmp
    total = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    icmp[2:4] = struct.pack("!H", ~total & 0xFFFF)
    payload = bytes([58, 0, 5, 2, 0, 0, 1, 0]) + icmp  # hop-by-hop: router alert (MLD)
    ip6 = struct.pack("!IHBB", 0x60000000, len(payload), 0, 1) + src + dst
    return bytes.fromhex("333300000016") + src_mac + b"\x86\xdd" + ip6 + payload


def _arp_request(src_mac: bytes, ip: str) -> bytes:
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src_mac + socket.inet_aton(ip)
    return b"\xff" * 6 + src_mac + b"\x08\x06" + arp + bytes(6) + socket.inet_aton(ip)


def flood_cost(n: int, rounds: int) -> None:
    """What one frame the bridge floods to n ports costs, in the kernel's receive path: a
    marker broadcast is sent alone, or right after the frame, from one container; the time
    until the port the bridge floods last gets the marker grows by the frame's n copies
    (one backlog queue, in order). With the MLD filter (burrow_quiet, as burrow makes it) the
    report's copies are dropped at the bridge's forward hook; "flooded" is without it. n + 1 copies must fit the backlog (netdev_max_backlog)."""
    from tests.frames import sniffer  # noqa: PLC0415 (only this mode needs it)

    wait_quiet()
    host, ctrs = Netns(), []
    floor = Floor(host, False, "nonft")
    try:
        for i in range(n):
            setns(floor.home)
            ctrs.append(Netns())
            setns(floor.host_fd)
            floor.setup(i, ctrs[-1])
        time.sleep(3)  # the setups' own reports pass
        setns(floor.home)
        tx, rx = sniffer(ctrs[-1]), sniffer(ctrs[0])  # ports are flooded newest first
        mac, marker_mac = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
        frames = {"marker alone": None, "MLD report, filtered": _checksummed_mld_report(mac),
                  "gratuitous ARP": _arp_request(mac, "10.89.0.2")}
        marker = _arp_request(marker_mac, "10.89.0.3")
        got: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, frame in [*frames.items(), ("MLD report, flooded", frames["MLD report, filtered"])]:
                if name.endswith("flooded"):
                    setns(floor.host_fd)
                    floor.nft.run(f"delete table bridge {MLD_TABLE}\n")
                    setns(floor.home)
                got.setdefault(name, []).append(_marker_latency(tx, rx, frame, marker, marker_mac))
                if name.endswith("flooded"):
                    setns(floor.host_fd)
                    floor.nft.run(mld_drop_ruleset())
                    setns(floor.home)
        base = statistics.median(got["marker alone"])
        print(f"\n== one flooded frame's cost at {n} ports (µs until the last port gets a marker "
              f"sent after it; medians of {rounds} rounds of 50; load {os.getloadavg()[0]:.1f})")
        for name, xs in got.items():
            med = statistics.median(xs)
            print(f"{name:24} {med:8.1f} µs   frame's share {med - base:8.1f} µs "
                  f"({(med - base) / n * 1000:6.0f} ns per port)")
        tx.close()
        rx.close()
    finally:
        setns(floor.host_fd)
        floor.close()
        for ctr in ctrs:
            ctr.close()
        host.close()


def _marker_latency(tx: socket.socket, rx: socket.socket, frame: bytes | None, marker: bytes,
                    marker_mac: bytes, count: int = 50) -> float:
    """Median µs from sending (frame +) marker until rx has the marker."""
    rx.settimeout(0.05)
    while True:  # what is queued from before
        try:
            rx.recv(2048)
        except TimeoutError:
            break
    rx.settimeout(1.0)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        if frame is not None:
            tx.send(frame)
        tx.send(marker)
        while True:
            try:
                data = rx.recv(2048)
            except TimeoutError:
                break
            if data[6:12] == marker_mac:
                times.append((time.perf_counter() - t0) * 1e6)
                break
        time.sleep(0.005)  # the backlog empties before the next pair
    return statistics.median(times) if times else float("nan")


def normalised_ruleset(host: Netns) -> list[str]:
    text = host.run(["nft", "list", "table", "inet", "netavark"]).stdout
    return [re.sub(r"\s+", " ", ln).strip() for ln in text.splitlines() if ln.strip()]


def container_view(ctr: Netns) -> list[str]:
    out = [ctr.run(["ip", "route", "show", "table", "all"]).stdout,
           ctr.run(["ip", "-6", "route", "show", "table", "main"]).stdout,
           ctr.run(["ip", "-br", "addr", "show", "eth0"]).stdout]
    for key in ("ipv4/conf/eth0/arp_notify", "ipv4/conf/eth0/rp_filter", "ipv6/conf/eth0/autoconf",
                "ipv6/conf/eth0/accept_dad", "ipv6/conf/eth0/router_solicitations"):
        out.append(key + "=" + ctr.run(["cat", f"/proc/sys/net/{key}"]).stdout.strip())
    return _normal(out)


def host_view(host: Netns) -> list[str]:
    """The bridge's ports (hairpin, addrgenmode, state) and its neighbours, up to MACs and
    indexes; the bridge's own sysctls."""
    out = [host.run(["ip", "-d", "link", "show", "master", BRIDGE]).stdout,
           host.run(["ip", "-6", "addr", "show", "master", BRIDGE]).stdout,
           host.run(["ip", "neigh", "show", "dev", BRIDGE]).stdout]
    for key in ("ipv4/conf/bwscale0/rp_filter", "ipv4/conf/bwscale0/route_localnet",
                "ipv4/ip_forward"):
        out.append(key + "=" + host.run(["cat", f"/proc/sys/net/{key}"]).stdout.strip())
    return sorted(_normal(out))


def _normal(blocks: list[str]) -> list[str]:
    lines = [ln for block in blocks for ln in block.splitlines()]
    subs = [(r"\s+", " "), (r"fe80::[0-9a-f:]+", "fe80::X"), (r"([0-9a-f]{1,2}:){5}[0-9a-f]{1,2}", "MAC"), (r"_timer [0-9.]+", "_timer T"),
            (r"designated_(bridge|root) \S+", r"designated_\1 B"),
            (r"\bveth\d+", "vethN"), (r"^\d+: ", ""), (r"@if\d+", "@ifN"),
            (r"\b(id|ifindex) \d+", r"\1 N"), (r"(port|no) 0x[0-9a-f]+", r"\1 N"),
            (r"\s+", " ")]
    out = []
    for ln in lines:
        for pat, rep in subs:
            ln = re.sub(pat, rep, ln)
        out.append(ln.strip())
    return out


def check(dual: bool) -> bool:
    """Two containers made by burrow and by the floor: the same rules, routes and sysctls."""
    tool = burrow_tool(VENV_BIN.parent, "nftables", False)(dual)
    b_ctrs = [Netns() for _ in range(2)]
    f_ctrs = [Netns() for _ in range(2)]
    host = Netns()
    try:
        for i, ctr in enumerate(b_ctrs):
            tool.call("setup", ctr, options(i, dual))
        floor = Floor(host, dual, "floor")
        try:
            for i, ctr in enumerate(f_ctrs):
                floor.setup(i, ctr)
        finally:
            floor.close()
        ok = True
        pairs: list[tuple[str, Callable[[], list[str]], Callable[[], list[str]]]] = [
            ("ruleset", lambda: normalised_ruleset(tool.host), lambda: normalised_ruleset(host)),
            *[(f"container {i}", lambda i=i: container_view(b_ctrs[i]),
               lambda i=i: container_view(f_ctrs[i])) for i in range(2)],
            ("host", lambda: host_view(tool.host), lambda: host_view(host))]
        for what, mine, theirs in pairs:
            a, b = mine(), theirs()
            same = a == b
            ok &= same
            print(f"check {'dual' if dual else 'v4'} {what}: {'same' if same else 'DIFFERENT'}")
            if not same:
                print("  burrow only:", [x for x in a if x not in b])
                print("  floor only: ", [x for x in b if x not in a])
                print("  burrow:", *a, "  floor:", *b, sep="\n    ")
        return ok
    finally:
        for ctr in b_ctrs + f_ctrs:
            ctr.close()
        tool.close()
        host.close()


def _variant(text: str) -> str:
    variant_flags(text)  # refuses unknown parts
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--shape", choices=["v4", "dual"], action="append")
    ap.add_argument("--variant", action="append", type=_variant,
                    help=f"one of {', '.join(VARIANTS)}, or several joined by '+'")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-burrow", action="store_true", help="the floor rows only")
    ap.add_argument("--steps", action="store_true",
                    help="each variant's time per step (always shown for `floor`)")
    ap.add_argument("--flood-cost", action="store_true",
                    help="one flooded frame's cost at --n ports (MLD report with/without "
                    "the MLD filter, gratuitous ARP); exit")
    ap.add_argument("--check", action="store_true",
                    help="compare two containers' rules, routes and sysctls with burrow's; exit")
    args = ap.parse_args()
    shapes = [s == "dual" for s in args.shape or ["v4", "dual"]]
    if args.flood_cost:
        flood_cost(args.n, max(3, args.repeat))
        return 0
    if args.check:
        return 0 if all([check(dual) for dual in shapes]) else 1
    print(f"== scripts/bench_scale_floor.py: N = {args.n}; load {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; kernel {os.uname().release}")
    for dual in shapes:
        shape(args.n, dual, args.variant or ["floor", "arp0", "vmap", "nonft"], not args.no_burrow,
              max(1, args.repeat), args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
