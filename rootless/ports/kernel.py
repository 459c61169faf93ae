"""Rootful published ports: kernel DNAT, written by the engine from `port_mappings`.

The engine's nftables backend does the DNAT for traffic from outside, for hairpin (a sandbox
to its own published port) and for the host's 127.0.0.1. Nothing listens on the host port, so
before setup a probe bind checks that no host process holds it (as Podman's port reservation
would fail), which is the only way such a clash would show.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netns.errors import BurrowError
from rootless.ports.spec import PortSpec


def _probe(host_ip: str, port: int, proto: str) -> None:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    fam = socket.AF_INET6 if (":" in host_ip or not host_ip) else socket.AF_INET
    addr = host_ip or "::"
    try:
        s = socket.socket(fam, kind)
    except OSError:  # no IPv6 on this host: all addresses means all IPv4 ones
        fam, addr = socket.AF_INET, "0.0.0.0"
        s = socket.socket(fam, kind)
    with s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT
        if fam == socket.AF_INET6 and not host_ip:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            s.bind((addr, port))
        except OSError as e:
            shown = f"[{host_ip}]" if ":" in host_ip else (host_ip or "*")
            if e.errno == errno.EADDRINUSE:
                raise BurrowError(f"host port {shown}:{port}/{proto} is already in use by "
                                  "another process; pick another host port") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise BurrowError(f"host address {host_ip} in port spec is not an address "
                                  "of this host; omit it to publish on all addresses") from None
            raise BurrowError(f"host port {shown}:{port}/{proto}: {e.strerror}") from None


@dataclass(frozen=True)
class KernelPorts:
    def check(self, ports: Sequence[PortSpec]) -> None:
        for p in ports:
            if p.host_ip == "::1":
                # IPv6 has no route_localnet: the kernel never routes ::1 off the host, so a
                # DNAT from ::1 to a sandbox is dropped.
                raise BurrowError(f"port spec {p}: rootful mode publishes with kernel DNAT, "
                                  "which cannot forward from [::1]; publish on all addresses "
                                  "or on a global IPv6 address of the host")
            for host_port, _ in p.pairs():
                _probe(p.host_ip, host_port, p.protocol)

    def engine_ports(self, rec: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [dict(p) for p in rec.get("ports", [])]

    def publish(self, rec: Mapping[str, Any]) -> None:
        return None  # the engine's setup already wrote the DNAT rules

    def unpublish(self, rec: Mapping[str, Any]) -> list[str]:
        return []  # the engine's teardown removes them

    def retarget(self, rec: Mapping[str, Any]) -> None:
        return None  # each network's setup/teardown adds/removes its own DNAT rules
