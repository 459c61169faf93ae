"""Bad input at the engine's boundary gives a clean `{"error": ...}`, never an internal error,
and never touches a file it was not meant to (issue 12, items 5 and 10). Pure: no namespace is
entered and nothing is applied (every case is refused before the first side effect)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from netns.netavark_cli import run
from tests.samples import records

BASE = records()["rootful-setup-2nets-static-ip-mac-alias-ports-tcp-udp-range.json"]["stdin"]


def cli(tmp_path: Path, *argv: str, stdin: bytes = b"") -> tuple[int, dict[str, Any]]:
    out, _err, code = run(["--config", str(tmp_path / "cfg"), "--firewall-driver", "none",
                           "--aardvark-binary", "/nonexistent", *argv], stdin, {})
    return code, json.loads(out) if out else {}


def test_update_refuses_a_network_name_that_is_a_path(tmp_path: Path) -> None:
    """Before: `update ../victim` rewrote the first line of <config>/victim."""
    victim = tmp_path / "cfg" / "victim"
    victim.parent.mkdir()
    victim.write_text("keep me\nsecond line\n")
    (tmp_path / "cfg" / "aardvark-dns").mkdir()
    (tmp_path / "cfg" / "aardvark-dns" / "aardvark.pid").write_text("999999999\n")
    code, out = cli(tmp_path, "update", "../victim", "--network-dns-servers", "1.1.1.1")
    assert code == 1 and "invalid network name '../victim'" in out["error"]
    assert victim.read_text() == "keep me\nsecond line\n"


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_netns_path_that_is_no_netns_is_a_clean_error(tmp_path: Path, kind: str) -> None:
    """Before: `internal error: OSError(22, 'Invalid argument')` from setns."""
    path = tmp_path / "not-a-netns"
    if kind == "file":
        path.write_text("")
    else:
        path.mkdir()
    code, out = cli(tmp_path, "setup", str(path), stdin=json.dumps(BASE).encode())
    assert code == 1
    assert out["error"] == f"invalid namespace path: {path} is not a network namespace"


@pytest.mark.parametrize("command", ["create", "teardown"])
def test_deeply_nested_json_is_a_decode_error(tmp_path: Path, command: str) -> None:
    """Before: `internal error: RecursionError(...)`. (teardown parses before it looks for the
    namespace; the path does not exist, and the input never parses, so nothing is touched.)"""
    argv = [command] if command == "create" else [command, str(tmp_path / "gone")]
    code, out = cli(tmp_path, *argv, stdin=b"[" * 200_000 + b"]" * 200_000)
    assert code == 1
    assert "JSON Decoding error" in out["error"] and "nested too deeply" in out["error"]
    assert "internal error" not in out["error"]


def _create(tmp_path: Path, **net: Any) -> tuple[int, dict[str, Any]]:
    body = {"network": {"name": "n1", **net}, "used": {}, "options": {}}
    return cli(tmp_path, "create", stdin=json.dumps(body).encode())


@pytest.mark.parametrize(("net", "message"), [
    ({"options": {"mtu": "10"}}, "option mtu=10 is below the IPv4 minimum of 68"),
    ({"options": {"mtu": "67"}}, "below the IPv4 minimum of 68"),
    ({"options": {"mtu": "1000"}, "ipv6_enabled": True}, "below the IPv6 minimum of 1280"),
    ({"options": {"mtu": "1279"}, "subnets": [{"subnet": "fd12::/64"}]}, "IPv6 minimum of 1280"),
    ({"options": {"mtu": "70000"}}, "out of range"),
])
def test_create_refuses_an_mtu_no_subnet_can_use(
    tmp_path: Path, net: dict[str, Any], message: str
) -> None:
    code, out = _create(tmp_path, **net)
    assert code == 1 and message in out["error"], out


@pytest.mark.parametrize(("net", "mtu"), [
    ({"options": {"mtu": "68"}}, "68"),
    ({"options": {"mtu": "1280"}, "ipv6_enabled": True}, "1280"),
    ({"options": {"mtu": "0"}}, "0"),
])
def test_create_keeps_a_usable_mtu(tmp_path: Path, net: dict[str, Any], mtu: str) -> None:
    code, out = _create(tmp_path, **net)
    assert code == 0 and out["options"]["mtu"] == mtu


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "x y", "x\ny", "", "é"])
def test_create_refuses_a_network_name_that_is_not_a_name(tmp_path: Path, name: str) -> None:
    code, out = _create(tmp_path, name=name)
    assert code == 1 and "network name" in out["error"].lower(), out


@pytest.mark.parametrize("pool", [
    {"base": "10.0.0.0/8", "size": 40},
    {"base": "10.0.0.0/8", "size": 4},
    {"base": "10.0.0.0/8", "size": "24"},
    "10.0.0.0/8",
])
def test_create_refuses_a_bad_subnet_pool_cleanly(tmp_path: Path, pool: object) -> None:
    """Before: a /40 pool raised ValueError out of ipaddress (an internal error)."""
    body = {"network": {"name": "n1"}, "options": {"subnet_pools": [pool]}}
    code, out = cli(tmp_path, "create", stdin=json.dumps(body).encode())
    assert code == 1 and "internal error" not in out["error"], out
