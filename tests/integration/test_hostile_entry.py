"""Hostile fields at `burrow-netavark setup`, tried for real (a throwaway host netns, the real
CLI, the iptables driver whose batches are line-based). A name with a trailing newline passed
the entry checks (`re.match` with `$`), so setup got as far as the firewall before
iptables-restore choked on the split line, or, under nftables, succeeded with a network named
"hard\\n" in its state files. Now it is refused before the first side effect."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import World, network, options
from tests.nsutil import Netns, unique

pytestmark = pytest.mark.root


@pytest.fixture
def world(host_ns: Netns, tmp_path: Path) -> World:
    return World(host_ns, tmp_path / "cfg", "iptables")


def request(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    net = network("hardnet", unique("be-"), [("10.97.4.0/24", "10.97.4.1")])
    opts = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.4.5"]})])
    opts["port_mappings"] = [{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1,
                              "protocol": "tcp"}]
    mutate(opts)
    return opts


def _rename(opts: dict[str, Any], new: str) -> None:
    opts["networks"] = {new: opts["networks"].pop("hardnet")}
    info = opts["network_info"].pop("hardnet")
    info["name"] = new
    opts["network_info"][new] = info


def _host_state(w: World) -> tuple[str, str]:
    links = w.host.run(["ip", "-o", "link"]).stdout
    rules = w.host.run(["iptables-save"]).stdout
    return links, "\n".join(ln for ln in rules.splitlines() if ln.startswith("-A"))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda o: _rename(o, "hard\n"), "invalid network name"),
    (lambda o: o.update(container_id=o["container_id"] + "\n"), "invalid container id"),
    (lambda o: o.update(container_name="web\n"), "invalid container name"),
    (lambda o: o["networks"]["hardnet"].update(interface_name="eth0\n"), "container interface"),
    (lambda o: o["networks"]["hardnet"].update(static_mac="92:d0:c6:0a:29:10\n"), "static mac"),
], ids=["network_name", "container_id", "container_name", "interface_name", "static_mac"])
def test_a_trailing_newline_is_refused_before_any_change(
    world: World, ctr_ns: Netns, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    before = _host_state(world)
    res = world.netavark("setup", ctr_ns, request(mutate), check=False)
    assert res.returncode == 1, res.stdout
    assert message in json.loads(res.stdout)["error"]
    assert _host_state(world) == before  # no bridge, no rule: refused at the entry
    assert "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout
    assert not (world.config / "firewall").exists()


def test_an_alias_with_a_trailing_newline_is_skipped_like_any_bad_alias(
    world: World, ctr_ns: Netns
) -> None:
    """Netavark 1.15 skips an alias that cannot be a name, with a warning; a trailing newline
    made the whole setup fail later, in the DNS config writer."""
    dns = World(world.host, world.config, "none", env={"RUST_LOG": "warn"}, aardvark="/bin/true")
    opts = request(lambda o: o["networks"]["hardnet"].update(aliases=["www\n", "good"]))
    opts["network_info"]["hardnet"]["dns_enabled"] = True
    opts["port_mappings"] = []
    res = dns.netavark("setup", ctr_ns, opts)
    assert "skipping DNS alias 'www\\n'" in res.stderr
    text = "".join(p.read_text() for p in (world.config / "aardvark-dns").iterdir() if p.is_file())
    assert text.splitlines()[1].endswith(" 10.97.4.5  web,good"), text
    dns.teardown(ctr_ns, opts)


def dual(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    net = network("hn", unique("be-"), [("10.97.5.0/24", "10.97.5.1"), ("fd97::/64", "fd97::1")],
                  ipv6_enabled=True)
    opts = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.5.5", "fd97::5"]})])
    mutate(opts)
    return opts


def _info(o: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = o["network_info"]["hn"]
    return info


def _port(host_ip: str) -> list[dict[str, Any]]:
    return [{"host_ip": host_ip, "container_port": 80, "host_port": 8080, "range": 1,
             "protocol": "tcp"}]


# Python's ipaddress takes "fd97::5%zz" (a scope id); the old code set up a container whose
# status said "fd97::5%zz/64", or failed mid-apply in nft/ip6tables/netlink ("internal error"
# for a metric past u32).
@pytest.mark.parametrize(("mutate", "message"), [
    (lambda o: o["networks"]["hn"].update(static_ips=["10.97.5.5", "fd97::5%zz"]), "%zone"),
    (lambda o: _info(o)["subnets"][1].update(gateway="fd97::1%zz"), "%zone"),
    (lambda o: _info(o)["subnets"][1].update(subnet="fd97::%zz/64"), "%zone"),
    (lambda o: o.update(port_mappings=_port("fd97::9%zz")), "%zone"),
    (lambda o: _info(o).update(routes=[{"destination": "fd98::/64", "gateway": "fd97::1%zz"}]),
     "%zone"),
    (lambda o: o.update(dns_servers=["fe80::1%x y"]), "%zone"),
    (lambda o: _info(o).update(routes=[{"destination": "10.98.0.0/24", "metric": 2**40}]),
     "metric 1099511627776 is not 0-4294967295"),
    (lambda o: _info(o).update(routes=[{"destination": "10.98.0.0/24", "metric": -1}]),
     "metric -1 is not"),
], ids=["static_ip", "gateway", "subnet", "host_ip", "route_gateway", "dns_server",
        "metric_big", "metric_negative"])
def test_an_address_with_a_zone_or_a_metric_past_u32_is_refused_before_any_change(
    world: World, ctr_ns: Netns, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    before = _host_state(world)
    res = world.netavark("setup", ctr_ns, dual(mutate), check=False)
    assert res.returncode == 1, res.stdout
    error = json.loads(res.stdout)["error"]
    assert message in error and "internal error" not in error, error
    assert _host_state(world) == before
    assert "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout
    assert not (world.config / "firewall").exists()


def _twice(opts: dict[str, Any]) -> None:
    """The 2.x array shape, with the network listed twice (another interface and address)."""
    per = opts["networks"]["hardnet"]
    opts["networks"] = [dict(per, name="hardnet"),
                        dict(per, name="hardnet", interface_name="eth1", static_ips=["10.97.4.6"])]


def _shared_bridge(opts: dict[str, Any]) -> None:
    info = opts["network_info"]["hardnet"]
    other = dict(info, name="other", subnets=[{"subnet": "10.97.7.0/24", "gateway": "10.97.7.1"}])
    opts["network_info"]["other"] = other
    opts["networks"]["other"] = {"interface_name": "eth1", "static_ips": ["10.97.7.5"]}


def _rules(w: World) -> list[str]:
    return [ln for ln in w.host.run(["iptables-save"]).stdout.splitlines() if "10.97." in ln]


@pytest.mark.parametrize(("mutate", "message"), [
    (_twice, "network hardnet is listed twice in the request"),
    (_shared_bridge, "networks hardnet and other both use bridge"),
], ids=["network_twice", "shared_bridge"])
def test_a_request_that_would_clash_or_leak_rules_is_refused_before_any_change(
    world: World, ctr_ns: Netns, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    """The same network twice failed mid-apply ("File exists" from the firewall); two networks
    on one bridge set up, and their teardown left the first network's rules behind for good
    (they go with the bridge, which the second network still held)."""
    opts = request(mutate)
    res = world.netavark("setup", ctr_ns, opts, check=False)
    if res.returncode == 0:  # the old code: show what the teardown leaves
        world.netavark("teardown", ctr_ns, opts, check=False)
        pytest.fail(f"set up; after teardown these rules are left: {_rules(world)}")
    assert message in json.loads(res.stdout)["error"], res.stdout
    assert _rules(world) == [] and "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout
    assert not (world.config / "firewall").exists()


def test_a_fifo_as_the_netns_path_is_refused_at_once(world: World, tmp_path: Path) -> None:
    """open() of a FIFO waits for a writer: setup and teardown hung (in-process, and so the
    warm engine's fallback too) until something wrote to it; now it is refused."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opts = request(lambda o: None)
    for command in ("setup", "teardown"):
        try:
            res = world.netavark(command, None, opts, check=False, netns_path=str(fifo))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command} blocked on a FIFO as the netns path")
        assert res.returncode in (0, 1), res  # teardown may go on with the host side only
        if command == "setup":
            assert "is not a network namespace" in json.loads(res.stdout)["error"]
