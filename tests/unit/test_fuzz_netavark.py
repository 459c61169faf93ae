"""Property-based fuzzing of the Netavark JSON front door (issue 12, bounded).

For arbitrary JSON shapes and near-valid requests with hostile strings in any field,
`netavark_cli.run` for setup, teardown, create and update either succeeds or answers exit 1
with `{"error": ...}` (or exit 2 for usage), never an "internal error", and never writes
outside its config dir.

create, update and the parse → validate → ipam → plan pipeline are pure and run anywhere. setup
and teardown apply what validates, so they run as root only, with this thread inside a
throwaway "host" netns and a throwaway container netns (nothing touches the machine's network).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netns import drivers, engine, names
from netns.errors import BurrowError
from netns.netavark_cli import run
from netns.nsenter import entered
from netns.schema import NetworkOptions
from tests.nsutil import Netns, is_root
from tests.samples import records

SAMPLE = records()["rootful-setup-2nets-static-ip-mac-alias-ports-tcp-udp-range.json"]["stdin"]

# Strings that have broken (or could break) a path, a config line, a rule or a parser.
HOSTILE = st.sampled_from([
    "", " ", ",", "\n", "a\nb", "a b", "../escape", "../../escape", "../../../escape", "/etc/x",
    "..", ".", "%int", "x%int", "a" * 16, "a" * 300, "\x00", "é", "eth0", "podman1", "lo",
    "10.89.7.10", "10.89.7.1", "10.89.7.255", "fd89:7::10", "::", "0.0.0.0", "1.2.3.4/33",
    "10.0.0.0/8", "-1", "65536", "1e9", "true", "none", "dhcp", "macvlan", "ipvlan", "tcp,udp",
    "icmp", "92:d0:c6:0a:29:10", "93:00:00:00:00:00", "00:00:00:00:00:00", "strict", "unmanaged",
    "blackhole", "{}", "[]", "\\", "'", '"', "$(id)", "*", "+",
    # `$` matched before a final newline; ipaddress takes a %zone; "²".isdigit() but not int()
    "eth0\n", "web\n", "fd89:7::10%zz", "10.89.0.0%zz/24", "\u00b2",
])
LEAF = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | HOSTILE | st.text(max_size=10)
)
JSON = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(HOSTILE | st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    _at(doc, path[:-1])[path[-1]] = value


@st.composite
def near_valid(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with one to three fields replaced, deleted or renamed to something hostile."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        every = list(paths(doc))[1:]
        strings = [p for p in every if isinstance(_at(doc, p), str)]
        if strings and draw(st.booleans()):  # keep the shape, poison one string
            path = draw(st.sampled_from(strings))
            _set(doc, path, draw(HOSTILE))
            continue
        path = draw(st.sampled_from(every))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "replace", "delete", "rename"]))
        if action == "replace" or isinstance(parent, list):
            parent[last] = draw(HOSTILE | JSON)
        elif action == "delete":
            del parent[last]
        else:
            parent[draw(HOSTILE)] = parent.pop(last)
    return doc


# The fields that reach a path, a config line, a rule or an interface name.
NAME_FIELDS = [
    ("container_name",), ("container_id",), ("network_info", "pdnet1", "name"),
    ("network_info", "pdnet1", "id"), ("network_info", "pdnet1", "network_interface"),
    ("networks", "pdnet1", "interface_name"), ("networks", "pdnet1", "aliases", 0),
    ("networks", "pdnet1", "static_mac"), ("network_info", "pdnet1", "network_dns_servers", 0),
    ("dns_servers", 0), ("port_mappings", 0, "host_ip"), ("port_mappings", 0, "protocol"),
]


@st.composite
def poisoned_name(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """One name-like field, or a network's name everywhere it appears, set to something hostile."""
    doc = copy.deepcopy(base)
    doc.setdefault("dns_servers", ["1.1.1.1"])
    doc["network_info"]["pdnet1"].setdefault("network_dns_servers", ["9.9.9.9"])
    value = draw(HOSTILE)
    if draw(st.booleans()):
        doc["networks"][value] = doc["networks"].pop("pdnet1")
        doc["network_info"][value] = doc["network_info"].pop("pdnet1")
        doc["network_info"][value]["name"] = value
    else:
        _set(doc, draw(st.sampled_from(NAME_FIELDS)), value)
    return doc


def dns_on(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for net in doc["network_info"].values():
        net["dns_enabled"] = True
    return doc


BASE = dns_on(SAMPLE)
CREATE_BASE = {
    "network": {"name": "fuzz", "driver": "bridge", "ipv6_enabled": True, "dns_enabled": True,
                "options": {"mtu": "1500", "isolate": "true"},
                "subnets": [{"subnet": "10.90.0.0/24", "gateway": "10.90.0.1"}]},
    "used": {"interfaces": ["podman0"], "names": ["podman"], "subnets": ["10.89.0.0/24"]},
    "options": {"subnet_pools": [{"base": "10.91.0.0/16", "size": 24}],
                "default_interface_name": "podman", "check_used_subnets": True},
}


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


class Box:
    """A config dir two levels below a root whose other contents must never change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "box" / "cfg"
        self.config.mkdir(parents=True)
        (root / "sentinel").write_text("untouched\n")
        self.before = {p for p in listing(root) if not p.startswith("box/cfg")}

    def run(self, argv: list[str], stdin: bytes, aardvark: str = "/nonexistent") -> tuple[str, int]:
        out, _err, code = run(["--config", str(self.config), "--firewall-driver", "none",
                               "--aardvark-binary", aardvark, *argv], stdin, {})
        assert code in (0, 1, 2), (code, out)
        if code == 1:
            error = json.loads(out)["error"]
            assert "internal error" not in error, error
        outside = {p for p in listing(self.root) if not p.startswith("box/cfg")}
        assert outside == self.before, f"written outside the config dir: {outside - self.before}"
        assert (self.root / "sentinel").read_text() == "untouched\n"
        return out, code


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# -- pure ----------------------------------------------------------------------------------


@FUZZ
@given(doc=poisoned_name(BASE) | near_valid(BASE) | JSON)
def test_the_pipeline_raises_only_burrow_errors(doc: Any) -> None:
    """parse → validate → ipam → plan, as setup and teardown run them before any apply."""
    try:
        req = engine.prepare(NetworkOptions.from_json(doc))
        for att in req.attachments:
            drivers.of(att).plan_setup(att, has_ports=bool(req.ports))
            drivers.of(att).plan_teardown(att)
    except BurrowError:
        pass


@FUZZ
@given(doc=JSON | near_valid(CREATE_BASE))
def test_create_never_fails_internally(tmp_path: Path, doc: Any) -> None:
    box = Box(tmp_path / os.urandom(4).hex())
    out, code = box.run(["create"], encode(doc))
    event(f"create exit {code}")
    if code == 0:
        net = json.loads(out)
        assert names.is_name(net["name"]) and net["subnets"]


@FUZZ
@given(name=HOSTILE | st.text(max_size=20), servers=st.lists(HOSTILE | st.text(max_size=8), max_size=3))
def test_update_never_fails_internally_or_escapes(tmp_path: Path, name: str, servers: list[str]) -> None:
    box = Box(tmp_path / os.urandom(4).hex())
    (box.config / "aardvark-dns").mkdir()
    (box.config / "aardvark-dns" / "fuzz").write_text("10.90.0.1\nid 10.90.0.5  web\n")
    box.run(["update", name, "--network-dns-servers", *servers], b"")


# -- applying, in throwaway namespaces --------------------------------------------------------


@pytest.mark.skipif(not is_root(), reason="environment: setup/teardown fuzzing applies what "
                    "validates, inside throwaway namespaces, which needs root")
def test_setup_and_teardown_never_fail_internally_or_escape(tmp_path: Path) -> None:
    host, ctr = Netns(), Netns()
    host_fd = os.open(host.path, os.O_RDONLY | os.O_CLOEXEC)
    box = Box(tmp_path)

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(doc=poisoned_name(BASE) | near_valid(BASE) | st.just(BASE) | JSON)
    def check(doc: Any) -> None:
        stdin = encode(doc)
        # /bin/true stands in for the DNS server, so the DNS config files are really written.
        _, code = box.run(["setup", ctr.path], stdin, aardvark="/bin/true")
        event(f"setup exit {code}")
        box.run(["teardown", ctr.path], stdin, aardvark="/bin/true")
        if code == 0:  # what setup made, teardown removed: the container is empty again
            links = ctr.run(["ip", "-o", "link"]).stdout
            assert [ln for ln in links.splitlines() if ": lo:" not in ln] == [], links

    try:
        with entered(host_fd):
            check()
    finally:
        os.close(host_fd)
        host.close()
        ctr.close()
