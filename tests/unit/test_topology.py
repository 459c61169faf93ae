"""Topology files (rootless.topology): the whole file is checked before anything is applied,
every error names the file, the table and the key, and the plan against what exists makes a
second `up` a no-op. Pure: no namespaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netns.errors import BurrowError
from rootless import topology

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "topology.toml"


def write(tmp: Path, text: str) -> Path:
    f = tmp / "t.toml"
    f.write_text(text)
    return f


def plan(topo: topology.Topology, nets: dict[str, Any] | None = None,
         boxes: dict[str, list[str]] | None = None, running: bool = True) -> topology.Plan:
    return topology.plan(topo, nets or {}, boxes or {}, lambda _n: running, 65520, rootless=True)


def test_the_example_loads_and_plans() -> None:
    topo = topology.load(EXAMPLE)
    assert [n.request.name for n in topo.networks] == ["front", "back"]
    boxes = {b.name: b for b in topo.sandboxes}
    assert boxes["api"].networks == ("front:alias=backend", "back:ip=10.98.0.10")
    assert boxes["api"].command == ("sh", "-c", "python3 -m http.server 9000")
    assert boxes["web"].ports == ("127.0.0.1:18097:8080",)
    p = plan(topo)
    assert [n["name"] for n in p.networks] == ["front", "back"] and len(p.sandboxes) == 3
    assert p.networks[1]["internal"] is True


def test_second_plan_is_empty_and_a_dead_command_is_restarted() -> None:
    topo = topology.load(EXAMPLE)
    first = plan(topo)
    nets = {n["name"]: n for n in first.networks}
    boxes = {b.name: b.network_names for b in first.sandboxes}
    again = plan(topo, nets, boxes)
    assert again.empty and len(again.unchanged) == 5
    dead = plan(topo, nets, boxes, running=False)
    assert {b.name for b in dead.restart} == {"web", "api", "db"} and not dead.sandboxes


@pytest.mark.parametrize("text, where", [
    ("[networks.a]\nsubnet = ['10.1.0.0/24']\n", "[networks.a] subnet: unknown key"),
    ("[networks.a]\ninternal = 'yes'\n", "[networks.a] internal: expected true or false"),
    ("[networks.'../x']\n", "[networks.../x] name:"),
    ("[sandboxes.s]\nports = ['70000:80']\n", "[sandboxes.s] ports:"),
    ("[sandboxes.s]\nports = '80:80'\n", "[sandboxes.s] ports: expected a list of strings"),
    ("[sandboxes.s]\ndns = ['x']\n", "[sandboxes.s] dns: 'x' is not an IP address"),
    ("[sandboxes.s.networks.n]\nip = 'nope'\n", "[sandboxes.s] networks:"),
    ("[sandboxes.s.networks.n]\nalias = ['a']\n", "[sandboxes.s] networks.n.alias: unknown key"),
    ("[sandboxes.s]\ncommand = [1]\n", "[sandboxes.s] command: expected a list of strings"),
    ("[sandbox.s]\n", "[top level] sandbox: unknown key"),
    ("", "[top level]: declares no"),
])
def test_errors_name_file_table_and_key(tmp_path: Path, text: str, where: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(BurrowError) as e:
        topology.load(f)
    assert str(e.value).startswith(f"{f}: "), str(e.value)
    assert where in str(e.value), str(e.value)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    f = write(tmp_path, "[networks.a\n")
    with pytest.raises(BurrowError, match=rf"{f}: not valid TOML: .*line 1"):
        topology.load(f)


def test_checks_against_what_exists_before_anything_is_applied(tmp_path: Path) -> None:
    f = write(tmp_path, "[networks.a]\nsubnets = ['10.1.0.0/24']\n"
                        "[sandboxes.s]\nnetworks = ['a', 'nothere']\n")
    with pytest.raises(BurrowError, match=r"\[sandboxes.s\] networks: network nothere is neither"):
        plan(topology.load(f))
    f = write(tmp_path, "[networks.a]\nsubnets = ['10.1.0.0/24']\n"
                        "[sandboxes.s.networks.a]\nip = '10.2.0.5'\n")
    with pytest.raises(BurrowError, match=r"\[sandboxes.s\] networks: static address 10.2.0.5"):
        plan(topology.load(f))
    topo = topology.load(write(tmp_path, "[networks.a]\nsubnets = ['10.1.0.0/24']\n"
                                         "[sandboxes.s]\nnetworks = ['a']\n"))
    other = {"a": {"name": "a", "subnets": [{"subnet": "10.3.0.0/24"}]}}
    with pytest.raises(BurrowError, match=r"\[networks.a\] subnets: network a exists with subnets"):
        plan(topo, other)
    same = {"a": {"name": "a", "subnets": [{"subnet": "10.1.0.0/24"}]}}
    with pytest.raises(BurrowError, match=r"\[sandboxes.s\] networks: sandbox s exists on"):
        plan(topo, same, {"s": ["burrow"]})
    # Overlapping subnets between two declared networks: refused at plan, before any change.
    f = write(tmp_path, "[networks.a]\nsubnets = ['10.1.0.0/24']\n"
                        "[networks.b]\nsubnets = ['10.1.0.0/25']\n")
    with pytest.raises(BurrowError, match=r"\[networks.b\] subnets:"):
        plan(topology.load(f))
