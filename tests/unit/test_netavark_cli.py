"""argv exactly as Podman writes it, and the stdout/stderr/exit-code contract."""

from __future__ import annotations

import json

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
        ({"name": "podman"}, "name podman is already used"),
        ({"name": "n", "driver": "tunnel"}, "unknown network driver"),
    ],
)
def test_create_rejects(net: dict[str, object], message: str) -> None:
    with pytest.raises(BurrowError, match=message):
        create_network({"network": net, "used": {"names": ["podman"], "subnets": ["10.89.0.0/24"]}})


def test_default_dns_server_is_burrow_dns() -> None:
    from pathlib import Path

    from netns.netavark_cli import default_dns_binary

    binary = default_dns_binary()
    assert Path(binary).name == "burrow-dns", binary
