"""Hostile fields in a real setup (issue 12, item 5): nothing in the request may reach the DNS
config format or a path outside the config dir. Each case runs the real CLI in a throwaway
"host" netns with DNS on (`/bin/true` stands in for the DNS server: the engine writes its
config files and "starts" it), so on the old code the injection really happened."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import World, network, options
from tests.nsutil import Netns, unique


@pytest.fixture
def world(host_ns: Netns, tmp_path: Path) -> World:
    box = tmp_path / "box"
    box.mkdir()
    return World(host_ns, box / "cfg", "none", aardvark="/bin/true")


def request(mutate: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    net = network("hardnet", unique("be-"), [("10.97.3.0/24", "10.97.3.1")], dns_enabled=True)
    opts = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.3.5"]})])
    if mutate:
        mutate(opts)
    return opts


def dns_text(w: World) -> str:
    d = w.config / "aardvark-dns"
    return "".join(p.read_text() for p in sorted(d.iterdir()) if p.is_file()) if d.is_dir() else ""


def test_a_clean_request_writes_one_dns_line(world: World, ctr_ns: Netns) -> None:
    """The control: the same setup with safe fields works and writes header + one line."""
    world.setup(ctr_ns, request())
    lines = dns_text(world).splitlines()
    assert lines[0] == "10.97.3.1" and lines[1].endswith(" 10.97.3.5  web") and len(lines) == 2


def _rename(opts: dict[str, Any], new: str) -> None:
    opts["networks"] = {new: opts["networks"]["hardnet"]}
    info = opts["network_info"].pop("hardnet")
    info["name"] = new
    opts["network_info"][new] = info


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda o: o.update(container_name="web\nevil 10.1.1.1  injected"), "invalid container name"),
    (lambda o: o.update(dns_servers=["8.8.8.8\nevil 10.1.1.1  injected"]), "invalid DNS server"),
    (lambda o: o["network_info"]["hardnet"].update(
        network_dns_servers=["1.1.1.1\nevil 10.1.1.1  injected"]), "invalid network DNS server"),
], ids=["container_name", "dns_servers", "network_dns_servers"])
def test_no_field_can_inject_a_dns_record(
    world: World, ctr_ns: Netns, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    res = world.netavark("setup", ctr_ns, request(mutate), check=False)
    assert res.returncode == 1, res.stdout
    assert message in json.loads(res.stdout)["error"]
    assert "injected" not in dns_text(world) and "evil" not in dns_text(world)
    # Refused before the first side effect: no interface was made in the container.
    assert "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout


def test_aliases_that_cannot_be_names_are_skipped_with_a_warning(world: World, ctr_ns: Netns) -> None:
    """Netavark 1.15: a bad alias is warned about and skipped; setup succeeds, and it never
    reaches the DNS file."""
    bad = ["www\nevil 10.1.1.1  injected", "a b", "x,y"]
    opts = request(lambda o: o["networks"]["hardnet"].update(aliases=[*bad, "good"]))
    world.env["RUST_LOG"] = "warn"
    res = world.netavark("setup", ctr_ns, opts)
    text = dns_text(world)
    assert text.splitlines()[1].endswith(" 10.97.3.5  web,good"), text
    assert "evil" not in text and "a b" not in text and "x,y" not in text
    assert "skipping DNS alias" in res.stderr
    world.teardown(ctr_ns, opts)


def test_a_network_dns_server_on_its_own_gateway_is_refused(world: World, ctr_ns: Netns) -> None:
    """Netavark 2.1: the DNS server would forward to itself; nothing is set up or written."""
    opts = request(lambda o: o["network_info"]["hardnet"].update(network_dns_servers=["10.97.3.1"]))
    res = world.netavark("setup", ctr_ns, opts, check=False)
    assert res.returncode == 1 and "is the gateway of network hardnet" in json.loads(res.stdout)["error"]
    assert dns_text(world) == ""
    assert "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout


def test_update_of_a_network_without_dns_is_a_no_op(world: World) -> None:
    """Netavark 1.7: nothing to update is success, even with no DNS server running."""
    res = world.netavark("update", None, None, command_args=["nodns", "--network-dns-servers", "1.1.1.1"],
                         check=False)
    assert (res.returncode, res.stdout) == (0, ""), res
    assert dns_text(world) == ""


def test_a_network_name_cannot_put_the_dns_file_outside_the_config_dir(
    world: World, ctr_ns: Netns
) -> None:
    res = world.netavark("setup", ctr_ns, request(lambda o: _rename(o, "../escaped")), check=False)
    assert res.returncode == 1 and "invalid network name" in json.loads(res.stdout)["error"]
    box = world.config.parent
    assert {p.name for p in box.iterdir()} <= {"cfg"}
    assert list(box.rglob("escaped*")) == []
