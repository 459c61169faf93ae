"""The records burrow keeps on disk for sandboxes and for the per-user world (typed, frozen).

The JSON shapes are the ones `burrow sandbox inspect` has always shown; unknown keys are kept
so a record written by a newer burrow survives a round trip through an older one.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netns.errors import BurrowError
from rootless.ports.spec import PortSpec
from rootless.procs import ProcRef

CREATING, RUNNING, LOST, RESTORING = "creating", "running", "lost", "restoring"


def rfc3339(ts: float) -> str:
    """A time as burrow shows it everywhere (sandboxes and networks): RFC 3339, UTC, seconds."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _created(raw: Any) -> str:
    """`created` as RFC 3339 text; records written before it was text hold epoch seconds."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return rfc3339(float(raw)) if raw else ""
    return raw if isinstance(raw, str) else ""


@dataclass(frozen=True)
class HostEntry:
    """`--add-host NAME:IP`: one line of the sandbox's /etc/hosts."""
    name: str
    ip: str

    def __str__(self) -> str:
        return f"{self.name}:{self.ip}"


def _strs(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    raw = data.get(key) or []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise BurrowError(f"{where}: `{key}` must be a list of strings")
    return tuple(raw)


@dataclass(frozen=True)
class Attachment:
    """A sandbox on one network: what the engine is asked for, per network."""
    interface_name: str
    static_ips: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    static_mac: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str) -> Attachment:
        if not isinstance(data, dict) or not isinstance(data.get("interface_name"), str):
            raise BurrowError(f"{where}: expected an object with `interface_name`")
        mac = data.get("static_mac")
        return cls(data["interface_name"], _strs(data, "static_ips", where),
                   _strs(data, "aliases", where), mac if isinstance(mac, str) else None)

    def to_json(self) -> dict[str, Any]:
        return {"interface_name": self.interface_name, "static_ips": list(self.static_ips),
                "aliases": list(self.aliases), "static_mac": self.static_mac}


@dataclass(frozen=True)
class SandboxRecord:
    name: str
    id: str
    networks: tuple[tuple[str, Attachment], ...]   # in attach order: eth0, eth1, ...
    ports: tuple[PortSpec, ...] = ()
    dns: tuple[str, ...] = ()
    created: str = ""                    # RFC 3339, UTC
    state: str = CREATING
    creator: ProcRef | None = None       # the command making it, while `creating`
    netns: str | None = None             # its namespace's path, as the world's commands see it
    world: ProcRef | None = None         # the holder it lives in (rootless); None when rootful
    status: Mapping[str, Any] = field(default_factory=dict)  # the engine's status blocks
    hostname: str | None = None          # --hostname (else the sandbox's name)
    dns_search: tuple[str, ...] = ()     # --dns-search, after the networks' domains
    dns_options: tuple[str, ...] = ()    # --dns-option: resolv.conf `options`
    hosts: tuple[HostEntry, ...] = ()    # --add-host
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    _KEYS = ("name", "id", "networks", "ports", "dns", "created", "state", "creator", "netns",
             "world", "status", "hostname", "dns_search", "dns_options", "add_hosts")

    @property
    def network_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.networks)

    def attachment(self, network: str) -> Attachment | None:
        return dict(self.networks).get(network)

    @property
    def ips(self) -> list[str]:
        return [ip for _, a in self.networks for ip in a.static_ips]

    def replace(self, **changes: Any) -> SandboxRecord:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, data: Any) -> SandboxRecord:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise BurrowError("sandbox record: expected an object with a `name`")
        where = f"sandbox record {data['name']}"
        try:
            return cls._parse(data, where)
        except (KeyError, TypeError, ValueError) as e:
            raise BurrowError(f"{where}: {type(e).__name__}: {e}") from None

    @classmethod
    def _parse(cls, data: dict[str, Any], where: str) -> SandboxRecord:
        nets, ports = data.get("networks", {}), data.get("ports", [])
        if not isinstance(nets, dict):
            raise BurrowError(f"{where}: `networks` must be an object")
        if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
            raise BurrowError(f"{where}: `ports` must be a list of objects")
        status, netns = data.get("status") or {}, data.get("netns")
        return cls(
            name=data["name"], id=str(data.get("id", "")),
            networks=tuple((str(n), Attachment.from_json(a, f"{where}, network {n}"))
                           for n, a in nets.items()),
            ports=tuple(PortSpec.from_json(p) for p in ports),
            dns=_strs(data, "dns", where), created=_created(data.get("created")),
            state=str(data.get("state") or RUNNING), creator=ProcRef.from_json(data.get("creator")),
            netns=netns if isinstance(netns, str) else None,
            world=ProcRef.from_json(data.get("world")),
            status=status if isinstance(status, dict) else {},
            hostname=data["hostname"] if isinstance(data.get("hostname"), str) else None,
            dns_search=_strs(data, "dns_search", where),
            dns_options=_strs(data, "dns_options", where),
            hosts=tuple(HostEntry(*h.split(":", 1)) for h in _strs(data, "add_hosts", where)
                        if ":" in h),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update({
            "name": self.name, "id": self.id,
            "networks": {n: a.to_json() for n, a in self.networks},
            "ports": [p.to_json() for p in self.ports], "dns": list(self.dns),
            "created": self.created, "state": self.state,
            "creator": self.creator.to_json() if self.creator else None,
            "world": self.world.to_json() if self.world else None,
            "status": dict(self.status),
            "hostname": self.hostname, "dns_search": list(self.dns_search),
            "dns_options": list(self.dns_options), "add_hosts": [str(h) for h in self.hosts],
        })
        if self.netns is not None:
            out["netns"] = self.netns
        return out


@dataclass(frozen=True)
class WorldRecord:
    """The per-user world (holder.json): its holder, and what it was made with, so a repair
    brings back the same kind of world."""
    holder: ProcRef
    unshare: int | None = None           # the unshare(1) parent, reaped on teardown if ours
    map_auto: bool = False
    created: float = 0.0
    connector: str | None = None         # the connector kind it was made with
    host_loopback: bool = False

    @classmethod
    def from_json(cls, data: Any) -> WorldRecord | None:
        if not isinstance(data, dict):
            return None
        holder = ProcRef.from_json(data.get("holder"))
        if holder is None:
            return None
        unshare, conn = data.get("unshare"), data.get("connector")
        return cls(holder, unshare if isinstance(unshare, int) else None,
                   bool(data.get("map_auto")), float(data.get("created") or 0.0),
                   conn if isinstance(conn, str) else None, bool(data.get("host_loopback")))

    def to_json(self) -> dict[str, Any]:
        return {"holder": self.holder.to_json(), "unshare": self.unshare,
                "map_auto": self.map_auto, "created": self.created,
                "connector": self.connector, "host_loopback": self.host_loopback}
