"""argv exactly as Podman writes it, and the stdout/stderr/exit-code contract."""

from __future__ import annotations

import json
import re

import pytest

from netns.create import create_network as _create_network
from netns.errors import BurrowError
from netns.netavark_cli import parse_args, run
from netns.schema import CreateRequest


def create_network(obj: dict[str, object]) -> dict[str, object]:
    return _create_network(CreateRequest.from_json(obj)).to_json()


def test_podman_argv() -> None:
    a = parse_args(
        ["--config", "/run/containers/networks", "--rootless=false",
         "--aardvark-binary=/usr/lib/podman/aardvark-dns", "setup", "/run/netns/netns-x"]
    )  # fmt: skip
    assert (a.command, a.config, a.rootless, a.aardvark_binary, a.netns_path) == (
        "setup", "/run/containers/networks", False, "/usr/lib/podman/aardvark-dns", "/run/netns/netns-x"
    )
    b = parse_args(["-c", "/x", "-r", "true", "-a", "/bin/dns", "--firewall-driver", "iptables", "teardown", "/p"])
    assert (b.rootless, b.firewall_driver, b.command) == (True, "iptables", "teardown")


def test_update_args() -> None:
    a = parse_args(["update", "net1", "--network-dns-servers", "1.1.1.1", "8.8.8.8"])
    assert a.network_name == "net1" and a.dns_servers == ("1.1.1.1", "8.8.8.8")
    assert parse_args(["update", "n", "--network-dns-servers="]).dns_servers == ()


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["setup"], ["setup", ""], ["--rootless=maybe", "version"], ["--bogus", "version"],
     ["--config"], ["update", "n"]],
)
def test_usage_errors_exit_2_on_stderr(argv: list[str]) -> None:
    out, err, code = run(argv, b"", {})
    assert code == 2 and out == "" and err.startswith("error:")


def test_help_and_version() -> None:
    out, _, code = run(["--help"], b"", {})
    assert code == 0 and "setup <NETNS_PATH>" in out
    out, _, code = run(["version"], b"", {})
    info = json.loads(out)
    assert code == 0 and set(info) == {"version", "commit", "build_time", "target"}


def test_errors_are_json_on_stdout_exit_1(tmp_path: object) -> None:
    out, err, code = run(["--config", str(tmp_path), "--firewall-driver", "none", "setup", "/nonexistent/ns"], b"{}", {})
    assert code == 1 and err == ""
    assert json.loads(out) == {"error": "invalid namespace path: IO error: No such file or directory (os error 2)"}


def test_logs_only_when_asked(tmp_path: object) -> None:
    argv = ["--config", str(tmp_path), "--firewall-driver", "none", "setup", "/proc/self/ns/net"]
    _, err, code = run(argv, b"{bad", {})
    assert code == 1 and err == ""
    _, err, _ = run(argv, b"{bad", {"RUST_LOG": "netavark=info"})
    assert "Using none firewall driver" in err


def test_create_fills_in_subnet_gateway_and_bridge() -> None:
    out = create_network(
        {"network": {"name": "n1", "driver": "bridge", "ipv6_enabled": True, "dns_enabled": True},
         "used": {"interfaces": ["podman0", "podman1"], "names": ["podman"], "subnets": ["10.89.0.0/24"]},
         "options": {"subnet_pools": [{"base": "10.89.0.0/16", "size": 24}], "default_interface_name": "podman"}}
    )  # fmt: skip
    assert out["network_interface"] == "podman2"
    v4, v6 = out["subnets"]
    assert v4 == {"subnet": "10.89.1.0/24", "gateway": "10.89.1.1"}
    assert v6["subnet"].startswith("fd") and v6["gateway"].endswith("::1")
    assert out["ipv6_enabled"] is True and len(out["id"]) == 64


@pytest.mark.parametrize(
    ("net", "message"),
    [
        ({"name": "n", "subnets": [{"subnet": "10.89.0.0/24"}]}, "already used"),
        ({"name": "n", "options": {"colour": "x"}}, "unsupported bridge network option"),
        ({"name": "n", "subnets": [{"subnet": "10.9.0.0/24", "gateway": "10.8.0.1"}]}, "not in subnet"),
        ({"name": "podman"}, "network already exists podman"),
        ({"name": "n", "driver": "tunnel"}, "unknown network driver"),
        # netavark 2.x create's own checks (issue 10)
        ({"name": "a b"}, "Invalid characters in network name"),
        ({"name": ""}, "Network name must be supplied"),
        ({"name": "n", "id": ""}, "Network id must be supplied"),
        ({"name": "n", "id": "xyz"}, "64 character hexadecimal"),
        ({"name": "n", "network_interface": "podman7"}, "bridge name podman7 already in use"),
        ({"name": "n", "subnets": [{"subnet": "10.9.0.0/24", "lease_range": {"start_ip": "10.9.1.5"}}]},
         "lease range start_ip 10.9.1.5 not in subnet 10.9.0.0/24"),
        ({"name": "n", "subnets": [{"subnet": "10.9.0.0/24",
                                    "lease_range": {"start_ip": "10.9.0.9", "end_ip": "10.9.0.5"}}]},
         "must be less than or equal"),
        ({"name": "n", "dns_enabled": True, "network_dns_servers": ["dns.example"]}, "invalid network DNS server"),
        ({"name": "n", "network_dns_servers": ["1.1.1.1"]}, "cannot set NetworkDNSServers if DNS is not enabled"),
        ({"name": "n", "options": {"mtu": "big"}}, "unable to parse 'mtu'"),
        ({"name": "n", "options": {"mtu": "-1"}}, "mtu"),
        ({"name": "n", "options": {"vlan": "x"}}, "unable to parse 'vlan'"),
        ({"name": "n", "options": {"vlan": "5000"}}, "vlan must be between 0 and 4094"),
        ({"name": "n", "options": {"vlan": "-1"}}, "unable to parse 'vlan'"),
        ({"name": "n", "options": {"vlan": "70000"}}, "unable to parse 'vlan'"),
        ({"name": "n", "ipam_options": {"driver": "none"}, "subnets": [{"subnet": "10.9.0.0/24"}]},
         "None ipam driver is set but subnets are given"),
        ({"name": "n", "ipam_options": {"driver": "magic"}}, "Unsupported ipam driver: magic"),
        ({"name": "n", "subnets": [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.1"}],
          "routes": [{"destination": "10.20.0.1/24", "gateway": "10.9.0.1"}]}, "route destination invalid"),
        ({"name": "n", "subnets": [{"subnet": "10.9.0.0/24"}, {"subnet": "10.9.0.0/24"}]}, "duplicate subnet"),
        ({"name": "n", "subnets": [{"subnet": "10.9.0.0/16"}, {"subnet": "10.9.3.0/24"}]}, "overlaps"),
        ({"name": "n", "routes": [{"destination": "10.20.0.0/24"}]}, "requires a gateway for type unicast"),
        ({"name": "n", "routes": [{"destination": "10.20.0.0/24", "gateway": "10.9.0.1",
                                   "route_type": "blackhole"}]}, "must not have a gateway for type blackhole"),
        ({"name": "n", "driver": "macvlan", "ipam_options": {"driver": "host-local"}}, "needs at least one subnet"),
        ({"name": "n", "driver": "ipvlan", "ipam_options": {"driver": "dhcp"}}, "dhcp is not supported with ipvlan"),
        ({"name": "n", "driver": "ipvlan", "subnets": [{"subnet": "10.5.0.0/24"}], "options": {"mode": "l9"}},
         "invalid ipvlan mode"),
    ],
)
def test_create_rejects(net: dict[str, object], message: str) -> None:
    with pytest.raises(BurrowError, match=message):
        create_network({"network": net, "used": {"names": ["podman"], "subnets": ["10.89.0.0/24"],
                                                  "interfaces": ["podman7"]}})


def test_create_defaults_as_netavark() -> None:
    """IPAM none forces DNS off; macvlan without a subnet gets dhcp (and never DNS); ipvlan is
    a known driver; every created network carries its `created` timestamp."""
    none = create_network({"network": {"name": "n", "dns_enabled": True, "ipam_options": {"driver": "none"}}})
    assert none["dns_enabled"] is False and none.get("subnets", []) == []
    mac = create_network({"network": {"name": "m", "driver": "macvlan", "dns_enabled": True}})
    assert mac["ipam_options"] == {"driver": "dhcp"} and mac["dns_enabled"] is False
    assert mac.get("subnets", []) == []
    ipv = create_network({"network": {"name": "i", "driver": "ipvlan", "subnets": [{"subnet": "10.5.0.0/24"}]}})
    assert ipv["ipam_options"] == {"driver": "host-local"} and ipv["subnets"] == [{"subnet": "10.5.0.0/24"}]
    assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", none["created"])


def test_default_dns_server_is_burrow_dns() -> None:
    from pathlib import Path

    from netns.netavark_cli import default_dns_binary

    binary = default_dns_binary()
    assert Path(binary).name == "burrow-dns", binary
