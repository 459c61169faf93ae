"""A declared topology (`burrow up -f FILE`): networks and sandboxes in TOML, read and checked
whole before anything is applied. Pure: parsing, validation and the plan against what exists;
`rootless.cmd_topology` applies it.

    [networks.front]                      # every key optional
    subnets = ["10.95.0.0/24", "fd95::/64"]
    internal = false

    [sandboxes.api]
    networks = ["front"]                  # or a table per network, below
    ports = ["127.0.0.1:18080:80"]
    command = ["python3", "-m", "http.server", "80"]

    [sandboxes.api.networks.back]         # the table form: static addresses and aliases
    ip = "10.96.0.10"
    aliases = ["db"]

Every error names the file, the table and the key.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from netns.errors import BurrowError
from rootless import netconf
from rootless.ports.spec import PortSpec

NETWORK_KEYS = {"subnets", "gateways", "ip_ranges", "ipv6", "internal", "dns", "dns_servers",
                "driver", "options"}
SANDBOX_KEYS = {"networks", "ports", "dns", "command"}
ATTACH_KEYS = {"ip", "ip6", "mac", "aliases"}
T = TypeVar("T")


@dataclass(frozen=True)
class NetworkDecl:
    request: netconf.NetworkRequest


@dataclass(frozen=True)
class SandboxDecl:
    name: str
    networks: tuple[str, ...]   # `--network` specs: NET[:ip=..,alias=..]
    ports: tuple[str, ...]      # `-p` specs
    dns: tuple[str, ...]
    command: tuple[str, ...]    # started detached in the sandbox when it is made; () for none

    @property
    def network_names(self) -> list[str]:
        return [spec.partition(":")[0] for spec in self.networks]


@dataclass(frozen=True)
class Topology:
    path: Path
    networks: tuple[NetworkDecl, ...] = ()
    sandboxes: tuple[SandboxDecl, ...] = ()


class _Where:
    """Builds errors that name the file, the table and the key."""

    def __init__(self, path: Path, table: str) -> None:
        self.path, self.table = path, table

    def err(self, key: str | None, msg: str) -> BurrowError:
        at = f"[{self.table}]" + (f" {key}" if key else "")
        return BurrowError(f"{self.path}: {at}: {msg}")

    def get(self, data: Mapping[str, Any], key: str, kind: type[T], default: T) -> T:
        v = data.get(key, default)
        if kind is list and isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v  # type: ignore[return-value]
        if kind is not list and isinstance(v, kind) and not (kind is int and isinstance(v, bool)):
            return v
        want = {list: "a list of strings", bool: "true or false", str: "a string",
                dict: "a table"}.get(kind, kind.__name__)
        raise self.err(key, f"expected {want}, got {v!r}")

    def unknown(self, data: Mapping[str, Any], allowed: set[str]) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            raise self.err(extra[0], f"unknown key; valid keys: {', '.join(sorted(allowed))}")

    def check(self, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except BurrowError as e:
            raise self.err(key, str(e)) from None


def load(path: Path) -> Topology:
    """Read and check the whole file (shape, names, addresses, port specs)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise BurrowError(f"{path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BurrowError(f"{path}: not valid TOML: {e}") from None
    top = _Where(path, "top level")
    top.unknown(data, {"networks", "sandboxes"})
    nets = top.get(data, "networks", dict, {})
    boxes = top.get(data, "sandboxes", dict, {})
    if not nets and not boxes:
        raise top.err(None, "declares no [networks.NAME] and no [sandboxes.NAME]")
    networks = tuple(_network(path, name, body) for name, body in nets.items())
    sandboxes = tuple(_sandbox(path, name, body) for name, body in boxes.items())
    return Topology(path, networks, sandboxes)


def _network(path: Path, name: str, body: Any) -> NetworkDecl:
    w = _Where(path, f"networks.{name}")
    w.check("name", lambda: netconf.check_name(name, "network"))
    if not isinstance(body, dict):
        raise w.err(None, "expected a table")
    w.unknown(body, NETWORK_KEYS)
    opts = w.get(body, "options", dict, {})
    bad = [k for k, v in opts.items() if not isinstance(v, str)]
    if bad:
        raise w.err("options", f"{bad[0]}: values are strings, e.g. mtu = \"1400\"")
    req = netconf.NetworkRequest(
        name, tuple(w.get(body, "subnets", list, [])), tuple(w.get(body, "gateways", list, [])),
        tuple(w.get(body, "ip_ranges", list, [])), w.get(body, "ipv6", bool, False),
        w.get(body, "internal", bool, False), not w.get(body, "dns", bool, True),
        tuple(w.get(body, "dns_servers", list, [])), w.get(body, "driver", str, "bridge"),
        w.check("options", lambda: netconf.parse_opts([f"{k}={v}" for k, v in opts.items()])))
    return NetworkDecl(req)


def _attach_spec(w: _Where, net: str, body: Any) -> str:
    key = f"networks.{net}"
    w.check(key, lambda: netconf.check_name(net, "network"))
    if not isinstance(body, dict):
        raise w.err(key, "expected a table (ip, ip6, mac, aliases)")
    extra = sorted(set(body) - ATTACH_KEYS)
    if extra:
        raise w.err(f"{key}.{extra[0]}", f"unknown key; valid keys: {', '.join(sorted(ATTACH_KEYS))}")
    opts = [f"{k}={w.get(body, k, str, '')}" for k in ("ip", "ip6", "mac") if k in body]
    opts += [f"alias={a}" for a in w.get(body, "aliases", list, [])]
    return net + (":" + ",".join(opts) if opts else "")


def _sandbox(path: Path, name: str, body: Any) -> SandboxDecl:
    from rootless.sandbox import Attach

    w = _Where(path, f"sandboxes.{name}")
    w.check("name", lambda: netconf.check_name(name, "sandbox"))
    if not isinstance(body, dict):
        raise w.err(None, "expected a table")
    w.unknown(body, SANDBOX_KEYS)
    raw = body.get("networks", [])
    if isinstance(raw, dict):
        specs = [_attach_spec(w, net, b) for net, b in raw.items()]
    else:
        specs = list(w.get(body, "networks", list, []))
    for spec in specs:
        w.check("networks", lambda spec=spec: Attach.parse(spec))  # type: ignore[misc]
    ports = w.get(body, "ports", list, [])
    for p in ports:
        w.check("ports", lambda p=p: PortSpec.parse(p))  # type: ignore[misc]
    dns = w.get(body, "dns", list, [])
    for d in dns:
        w.check("dns", lambda d=d: _ip(d))  # type: ignore[misc]
    cmd = body.get("command", [])
    if isinstance(cmd, str):  # one string: run by sh, as a compose `command:` string is
        command = ["sh", "-c", cmd] if cmd.strip() else []
    else:
        command = w.get(body, "command", list, [])
    return SandboxDecl(name, tuple(specs), tuple(ports), tuple(dns), tuple(command))


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise BurrowError(f"{text!r} is not an IP address") from None


# -- the plan: what `up` must do, given what exists ----------------------------------------------
@dataclass(frozen=True)
class Plan:
    networks: tuple[dict[str, Any], ...] = ()        # network configs to create
    sandboxes: tuple[SandboxDecl, ...] = ()          # sandboxes to create
    unchanged: tuple[str, ...] = ()                  # "network web", "sandbox api"
    restart: tuple[SandboxDecl, ...] = field(default=())  # existing, command no longer running

    @property
    def empty(self) -> bool:
        return not (self.networks or self.sandboxes or self.restart)


def plan(topo: Topology, networks: Mapping[str, dict[str, Any]],
         sandboxes: Mapping[str, Sequence[str]], running: Callable[[str], bool],
         mtu: int | None, rootless: bool) -> Plan:
    """Check the file against what exists and say what to make. `sandboxes` maps each existing
    sandbox to its networks; `running(name)` says whether anything runs in it. Raises, naming the
    file, on anything that would fail half-way: a network or sandbox of that name that differs."""
    known = dict(networks)
    new_nets, unchanged = _plan_networks(topo, known, mtu, rootless)
    new_boxes: list[SandboxDecl] = []
    restart: list[SandboxDecl] = []
    for box in topo.sandboxes:
        w = _Where(topo.path, f"sandboxes.{box.name}")
        for spec, net_name in zip(box.networks, box.network_names, strict=True):
            if net_name not in known and net_name != netconf.DEFAULT_NETWORK:
                raise w.err("networks", f"network {net_name} is neither declared in this file "
                            f"nor exists; add [networks.{net_name}] or `burrow network create "
                            f"{net_name}`")
            _static_in_subnet(w, spec, known.get(net_name))
        if box.name not in sandboxes:
            new_boxes.append(box)
            continue
        if sorted(sandboxes[box.name]) != sorted(box.network_names or [netconf.DEFAULT_NETWORK]):
            raise w.err("networks", f"sandbox {box.name} exists on networks "
                        f"{', '.join(sandboxes[box.name])}; remove it first "
                        f"(`burrow down -f {topo.path}`)")
        unchanged.append(f"sandbox {box.name}")
        if box.command and not running(box.name):
            restart.append(box)
    return Plan(tuple(new_nets), tuple(new_boxes), tuple(unchanged), tuple(restart))


def _plan_networks(topo: Topology, known: dict[str, dict[str, Any]], mtu: int | None,
                   rootless: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The declared networks to create (added to `known`), and those that exist as declared."""
    new_nets: list[dict[str, Any]] = []
    host = () if rootless else netconf.host_subnets()  # rootful bridges are the host's
    unchanged: list[str] = []
    for decl in topo.networks:
        w = _Where(topo.path, f"networks.{decl.request.name}")
        have = known.get(decl.request.name)
        if have is not None:
            _same_network(w, decl.request, have)
            unchanged.append(f"network {decl.request.name}")
            continue
        net = w.check("subnets", lambda d=decl: netconf.make_network(  # type: ignore[misc]
            d.request, known, mtu, rootless=rootless, host=host))
        known[net["name"]] = net
        new_nets.append(net)
    return new_nets, unchanged


def _same_network(w: _Where, req: netconf.NetworkRequest, have: Mapping[str, Any]) -> None:
    if not req.subnets:
        return  # any subnet will do: the existing one is it
    want = {str(ipaddress.ip_network(s, strict=False)) for s in req.subnets}
    got = {str(s.get("subnet")) for s in have.get("subnets", [])}
    if want != got:
        raise w.err("subnets", f"network {req.name} exists with subnets {', '.join(sorted(got))}, "
                    f"not {', '.join(sorted(want))}; remove it first (`burrow network rm "
                    f"{req.name}`) or change the file")


def _static_in_subnet(w: _Where, spec: str, net: Mapping[str, Any] | None) -> None:
    from rootless.sandbox import Attach

    if net is None:
        return
    subnets = [ipaddress.ip_network(s["subnet"]) for s in net.get("subnets", [])]
    for ip in Attach.parse(spec).ips:
        addr = ipaddress.ip_address(ip)
        if not any(addr in s for s in subnets):
            raise w.err("networks", f"static address {ip} is not in network {net['name']}'s "
                        f"subnets ({', '.join(map(str, subnets))})")
