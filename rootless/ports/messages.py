"""The forwarder's wire messages, typed: the control protocol and the dialer channel.

Control: one JSON object per line on the control socket, answered by one JSON line
(`{"ok": true, ...}` or `{"error": "..."}`). Dialer: one JSON object per SOCK_SEQPACKET packet,
answered by a header packet carrying the sockets as SCM_RIGHTS.

Every message is parsed here, once, into a frozen dataclass; a malformed one raises a
BurrowError naming what is wrong, and nothing past this module ever sees raw JSON.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from netns.errors import BurrowError
from rootless.ports.spec import PortSpec

MAX_LINE = 1 << 20  # one control request; an honest `add` is a few hundred bytes
MAX_SPECS = 1024  # port specs in one `add`
MAX_ONLINK = 64  # the sandbox's own subnets in one `add`
MAX_NETNS_PATH = 1024
# The key a set of ports is published under: a sandbox name (a DNS label) or a container ID.
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
FAMILIES = (4, 6)
KINDS = ("tcp", "udp")
MAX_DIAL_BATCH = 250  # sockets in one dialer reply (SCM_MAX_FD is 253)
T = TypeVar("T")


def _field(obj: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BurrowError(f"field {key!r} must be {kind.__name__}, got {value!r:.60}")
    return value


def owner(text: Any) -> str:
    if not isinstance(text, str) or not OWNER_RE.fullmatch(text):
        raise BurrowError(f"invalid sandbox {text!r:.80}: expected a name of letters, digits, "
                          "'_', '.' and '-' (at most 128)")
    return text


def netns_path(text: Any) -> str:
    """An absolute, normalised path: no `..`, no NUL, nothing a relative open could escape."""
    if not isinstance(text, str) or not text.startswith("/") or len(text) > MAX_NETNS_PATH \
            or "\0" in text or os.path.normpath(text) != text or "/../" in text + "/":
        raise BurrowError(f"invalid netns path {text!r:.80}: expected an absolute, normalised "
                          "path")
    return text


def _address(obj: Mapping[str, Any], key: str, version: int) -> Any:
    value = obj.get(key)
    if value is None or value == "":
        return None
    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        ip = None
    if ip is None or ip.version != version:
        raise BurrowError(f"field {key!r} must be an IPv{version} address, got {value!r:.60}")
    return ip


Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def _subnets(obj: Mapping[str, Any], key: str) -> tuple[Subnet, ...]:
    raw = obj.get(key, [])
    try:
        if not isinstance(raw, list) or len(raw) > MAX_ONLINK \
                or not all(isinstance(s, str) for s in raw):
            raise ValueError
        return tuple(ipaddress.ip_network(s, strict=False) for s in raw)
    except ValueError:
        raise BurrowError(f"field {key!r} must be a list of at most {MAX_ONLINK} subnets, "
                          f"got {raw!r:.80}") from None


@dataclass(frozen=True)
class Ping:
    """Liveness and the live counts shown by `burrow status`."""

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Ping:
        return Ping()

    def to_json(self) -> dict[str, Any]:
        return {"op": "ping"}


@dataclass(frozen=True)
class ListPorts:
    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ListPorts:
        return ListPorts()

    def to_json(self) -> dict[str, Any]:
        return {"op": "list"}


@dataclass(frozen=True)
class Shutdown:
    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Shutdown:
        return Shutdown()

    def to_json(self) -> dict[str, Any]:
        return {"op": "shutdown"}


@dataclass(frozen=True)
class Remove:
    sandbox: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Remove:
        return Remove(owner(obj.get("sandbox")))

    def to_json(self) -> dict[str, Any]:
        return {"op": "remove", "sandbox": self.sandbox}


@dataclass(frozen=True)
class Add:
    """Publish `ports` for `sandbox`, dialling into `netns` at its first v4 / v6 address.

    `via` (optional) is the netns that routes to the sandbox and in which the user holds
    CAP_NET_ADMIN (burrow's own user netns). With it, ports keep the client's address: the
    dial is made from there with IP_TRANSPARENT, bound to the client's address
    (rootless.ports.clientaddr). Without it, the sandbox sees its own address, as before.
    `onlink`: the sandbox's own subnets (Target.onlink).
    """

    sandbox: str
    netns: str
    ip4: ipaddress.IPv4Address | None
    ip6: ipaddress.IPv6Address | None
    ports: tuple[PortSpec, ...]
    via: str | None = None
    onlink: tuple[Subnet, ...] = ()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Add:
        return _add(obj)

    def to_json(self) -> dict[str, Any]:
        return {"op": "add", "sandbox": self.sandbox, "netns": self.netns,
                "ip4": str(self.ip4) if self.ip4 else None,
                "ip6": str(self.ip6) if self.ip6 else None,
                "ports": [p.to_json() for p in self.ports],
                **({"via": self.via} if self.via else {}),
                **({"onlink": [str(n) for n in self.onlink]} if self.onlink else {})}


@dataclass(frozen=True)
class Retarget:
    """Point `sandbox`'s published ports at where it is now (after `network connect` or
    `disconnect`): `add`'s fields but `ports`. The listeners stay bound; new connections dial
    the new addresses, UDP flows to the old ones end (PortManager.retarget)."""

    sandbox: str
    netns: str
    ip4: ipaddress.IPv4Address | None
    ip6: ipaddress.IPv6Address | None
    via: str | None = None
    onlink: tuple[Subnet, ...] = ()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Retarget:
        a = _add({**obj, "ports": []})
        return cls(a.sandbox, a.netns, a.ip4, a.ip6, a.via, a.onlink)

    def to_json(self) -> dict[str, Any]:
        add = Add(self.sandbox, self.netns, self.ip4, self.ip6, (), self.via, self.onlink)
        return {k: v for k, v in add.to_json().items() if k != "ports"} | {"op": "retarget"}


Request = Ping | ListPorts | Shutdown | Remove | Add | Retarget


def _add(obj: Mapping[str, Any]) -> Add:
    raw = obj.get("ports", [])
    if not isinstance(raw, list) or len(raw) > MAX_SPECS:
        raise BurrowError(f"field 'ports' must be a list of at most {MAX_SPECS} port mappings")
    via = obj.get("via")
    return Add(owner(obj.get("sandbox")), netns_path(obj.get("netns")),
               _address(obj, "ip4", 4), _address(obj, "ip6", 6),
               tuple(PortSpec.from_json(p) for p in raw),
               None if via is None else netns_path(via), _subnets(obj, "onlink"))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Request]] = {
    "ping": Ping.from_json, "list": ListPorts.from_json, "shutdown": Shutdown.from_json,
    "remove": Remove.from_json, "add": Add.from_json, "retarget": Retarget.from_json,
}


def parse_request(obj: Any) -> Request:
    if not isinstance(obj, dict):
        raise BurrowError("a request must be a JSON object")
    op = obj.get("op")
    parser = _PARSERS.get(op) if isinstance(op, str) else None
    if parser is None:
        raise BurrowError(f"unknown op {op!r:.40}")
    return parser(obj)


def request_from_line(line: bytes) -> Request:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise BurrowError(f"not JSON: {type(e).__name__}") from None
    return parse_request(obj)


# -- the dialer channel ----------------------------------------------------------------------
@dataclass(frozen=True)
class Dial:
    """Make `n` unconnected sockets of `family`/`kind` inside `netns`.

    `transparent`: with IP_TRANSPARENT and the dial mark set, for binding a client's address,
    and with the reply routing of rootless.ports.clientaddr set up in `netns` first (once):
    `inside` the sandbox's own (clientaddr INSIDE), else for dials from `netns` (VIA)."""

    id: int
    netns: str
    family: int
    kind: str
    n: int
    transparent: bool = False
    inside: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Dial:
        family, kind = _field(obj, "family", int), _field(obj, "type", str)
        n = _field(obj, "n", int)
        if family not in FAMILIES or kind not in KINDS or not 1 <= n <= MAX_DIAL_BATCH:
            raise BurrowError(f"bad dial request family={family} type={kind!r:.10} n={n}")
        transparent, inside = obj.get("transparent", False), obj.get("inside", False)
        for name, v in (("transparent", transparent), ("inside", inside)):
            if not isinstance(v, bool):
                raise BurrowError(f"field '{name}' must be bool, got {v!r:.20}")
        if inside and not transparent:
            raise BurrowError("field 'inside' needs 'transparent'")
        return cls(_field(obj, "id", int), netns_path(obj.get("netns")), family, kind, n,
                   transparent, inside)

    def to_json(self) -> dict[str, Any]:
        return {"op": "dial", "id": self.id, "netns": self.netns, "family": self.family,
                "type": self.kind, "n": self.n,
                **({"transparent": True} if self.transparent else {}),
                **({"inside": True} if self.inside else {})}


@dataclass(frozen=True)
class Forget:
    """Close the dialer's handle on `netns`: the sandbox is gone."""

    netns: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Forget:
        return cls(netns_path(obj.get("netns")))

    def to_json(self) -> dict[str, Any]:
        return {"op": "forget", "netns": self.netns}


@dataclass(frozen=True)
class DialReply:
    """`unsupported`: the error is that this kernel or namespace cannot keep client
    addresses (a transparent dial's set-up failed), not that the netns is gone."""

    id: int
    error: str | None
    unsupported: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DialReply:
        err = obj.get("error")
        return cls(_field(obj, "id", int), None if err is None else str(err),
                   obj.get("unsupported") is True)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "error": self.error,
                **({"unsupported": True} if self.unsupported else {})}


def _object(data: bytes, what: str) -> dict[str, Any]:
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise BurrowError(f"a {what} must be a JSON object")
    return obj


def parse_dialer_request(data: bytes) -> Dial | Forget:
    obj = _object(data, "dialer request")
    return Forget.from_json(obj) if obj.get("op") == "forget" else Dial.from_json(obj)


def parse_dialer_reply(data: bytes) -> DialReply:
    return DialReply.from_json(_object(data, "dialer reply"))
