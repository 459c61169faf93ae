"""What reaches a container's port: a packet socket on its interface, and the frames it saw by kind.

Used by the flood tests (tests/integration/test_engine_floods.py) and the frame count of
`scripts/bench_scale_frames.py`: every broadcast or multicast frame one container sends is
copied by the bridge to every other port, so these are what each of N containers pays for.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

from netns.nsenter import entered
from tests.nsutil import Netns

ETH_P_ALL, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0806, 0x0800, 0x86DD
MLD2_REPORT, ROUTER_SOLICIT, NEIGH_SOLICIT = 143, 133, 135
ICMP6 = {130: "mld query", 131: "mldv1 report", ROUTER_SOLICIT: "router solicitation",
         134: "router advert", NEIGH_SOLICIT: "neighbour solicitation", 136: "neighbour advert",
         MLD2_REPORT: "mldv2 report"}


@dataclass(frozen=True)
class Frame:
    src: str  # the sender's MAC, aa:bb:...
    kind: str  # "mldv2 report", "router solicitation", "neighbour solicitation (DAD)", ...
    detail: str  # MLDv2 records as "type:group", else ""
    at: float  # seconds since the collection started


def _mld2_records(frame: bytes, off: int) -> str:
    """The records of an MLDv2 report whose ICMPv6 header starts at `off`."""
    if len(frame) < off + 8:
        return ""
    count, off, recs = struct.unpack("!H", frame[off + 6:off + 8])[0], off + 8, []
    for _ in range(min(count, 8)):
        if off + 20 > len(frame):
            break
        rtype, aux, nsrc = frame[off], frame[off + 1], struct.unpack("!H", frame[off + 2:off + 4])[0]
        recs.append(f"{rtype}:{ipaddress.IPv6Address(frame[off + 4:off + 20])}")
        off += 20 + 16 * nsrc + 4 * aux
    return " ".join(recs)


def classify(frame: bytes) -> tuple[str, str]:
    """(kind, detail) of an Ethernet frame."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_P_ARP and len(frame) >= 42:
        op = struct.unpack("!H", frame[20:22])[0]
        gratuitous = " (gratuitous)" if frame[28:32] == frame[38:42] else ""
        return f"arp {'reply' if op == 2 else 'request'}{gratuitous}", ""
    if ethertype == ETH_P_IP and len(frame) >= 34:
        return ("igmp" if frame[23] == 2 else f"ipv4 proto {frame[23]}"), ""
    if ethertype == ETH_P_IPV6 and len(frame) >= 55:
        off, nxt = 54, frame[20]
        if nxt == 0 and len(frame) >= 63:  # hop-by-hop options (MLD carries router alert)
            off, nxt = 54 + (frame[55] + 1) * 8, frame[54]
        if nxt != 58 or len(frame) <= off:
            return f"ipv6 next {nxt}", ""
        kind = ICMP6.get(frame[off], f"icmp6 {frame[off]}")
        if frame[off] == NEIGH_SOLICIT and frame[22:38] == bytes(16):
            kind += " (DAD)"  # from the unspecified address
        return kind, _mld2_records(frame, off) if frame[off] == MLD2_REPORT else ""
    return f"ethertype {ethertype:#06x}", ""


def sniffer(ns: Netns, dev: str = "eth0") -> socket.socket:
    """A packet socket on `dev` in `ns`: every frame the bridge gives that port."""
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((dev, 0))
    finally:
        os.close(fd)
    return sock


def drain(sock: socket.socket, quiet: float = 0.5) -> None:
    """Drop what is queued, until nothing came for `quiet` seconds."""
    sock.settimeout(quiet)
    while True:
        try:
            sock.recv(2048)
        except TimeoutError:
            return


def collect(sock: socket.socket, seconds: float, t0: float | None = None) -> list[Frame]:
    """The frames `sock` gets until `seconds` after t0 (default: now)."""
    start = time.monotonic() if t0 is None else t0
    got = []
    sock.settimeout(0.1)
    while time.monotonic() - start < seconds:
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            continue
        kind, detail = classify(frame)
        got.append(Frame(frame[6:12].hex(":"), kind, detail, time.monotonic() - start))
    return got
