"""Rootless published ports: burrow's userspace forwarder (`rootless.ports.forwarder`).

It listens on the host as the user and reaches the sandbox through a dialer inside the user
namespace, so the engine gets no `port_mappings` (DNAT inside the namespace would be useless).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netns.errors import BurrowError
from rootless.ports import control, messages
from rootless.ports.spec import PortSpec
from rootless.store import Store
from rootless.userns import Holder

# The user's netns as the dialer sees it: the holder is PID 1 of its PID namespace, and the
# holder's mount ns (where the dialer runs) has that namespace's procfs on /proc. Dials from
# there keep the client's address (rootless.ports.clientaddr).
OWN_NETNS = "/proc/1/ns/net"


def addresses(rec: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The sandbox's first IPv4 and first IPv6 address over all its networks."""
    v4 = v6 = None
    for att in rec.get("networks", {}).values():
        for ip in att.get("static_ips", []):
            if ":" in ip:
                v6 = v6 or ip
            else:
                v4 = v4 or ip
    return v4, v6


def subnets(store: Store, rec: Mapping[str, Any]) -> list[str]:
    """The subnets of the sandbox's networks: a client inside one is on its link
    (rootless.ports.target.Target.onlink)."""
    out = []
    for name in rec.get("networks", {}):
        try:
            out += [str(s["subnet"]) for s in store.network(name).get("subnets", [])]
        except (BurrowError, KeyError, TypeError):
            continue
    return out[:messages.MAX_ONLINK]


def routed(store: Store, rec: Mapping[str, Any]) -> bool:
    """Whether the sandbox has a route out (a network that is not --internal): replies to a
    client's own address need it, so a sandbox without one sees the old, unkept peer."""
    for name in rec.get("networks", {}):
        try:
            if not store.network(name).get("internal"):
                return True
        except BurrowError:
            continue
    return False


@dataclass(frozen=True)
class ForwarderPorts:
    holder: Holder

    def check(self, ports: Sequence[PortSpec]) -> None:
        return None  # the forwarder binds on `add` and reports in-use/privileged ports itself

    def engine_ports(self, rec: Mapping[str, Any]) -> list[dict[str, Any]]:
        return []

    def publish(self, rec: Mapping[str, Any]) -> None:
        if not rec.get("ports"):
            return
        control.ensure(self.holder)
        control.request(self.holder.paths, messages.parse_request(
            {"op": "add", **self._where(rec), "ports": rec["ports"]}))

    def retarget(self, rec: Mapping[str, Any]) -> None:
        if not rec.get("ports") or not control.running(self.holder.paths):
            return  # nothing published, or `burrow up` publishes from the record
        control.request(self.holder.paths, messages.parse_request(
            {"op": "retarget", **self._where(rec)}))

    def _where(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        """The sandbox's part of an add/retarget request: what its ports dial, as it is now."""
        ip4, ip6 = addresses(rec)
        store = Store(self.holder.paths)
        return {"sandbox": rec["name"], "netns": rec["netns"], "ip4": ip4, "ip6": ip6,
                "onlink": subnets(store, rec), "via": OWN_NETNS if routed(store, rec) else None}

    def unpublish(self, rec: Mapping[str, Any]) -> list[str]:
        if not rec.get("ports") or not control.running(self.holder.paths):
            return []
        try:
            control.request(self.holder.paths, messages.Remove(rec["name"]))
        except BurrowError as e:
            return [str(e)]
        return []
