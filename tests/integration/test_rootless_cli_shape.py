"""Podman's shapes and scriptable output against a real world, with burrow run as the
unprivileged user: `--network none`, `ip=` with IPv6, `interface_name=`, `--hostname`,
`--add-host`, `--dns-search`, `--dns-option`, `--network-alias`, `-p CTR` (a host port burrow
picks), the network commands' flags, multi-name commands, and `--connector` of a running
world. Addresses: inside namespaces the tests create, or the host's loopback."""

from __future__ import annotations

import json
import shutil
import socket
from typing import Any

import pytest

from tests.integration.test_rootless_sandbox import serve
from tests.rootless_user import VENV_BIN

BURROW = VENV_BIN / "burrow"

pytestmark = pytest.mark.rootless


def ok(rl: Any, *args: str, timeout: float = 60) -> str:
    res = rl.burrow(*args, timeout=timeout)
    assert res.rc == 0, (args, res.out, res.err)
    return str(res.out)


def in_sandbox(rl: Any, name: str, script: str) -> str:
    return ok(rl, "exec", name, "--", "sh", "-c", script)


def test_sandbox_create_takes_podmans_options(rl: Any) -> None:
    ok(rl, "network", "create", "bweb", "--subnet", "10.93.0.0/24", "--subnet", "fd93::/64")
    ok(rl, "sandbox", "create", "api",
       "--network", "bweb:ip=10.93.0.20,ip=fd93::20,interface_name=web0,alias=backend",
       "--network-alias", "svc", "--hostname", "apihost", "--add-host", "db:10.1.2.3",
       "--add-host", "db6:fd00::5", "--dns-search", "example.com", "--dns-option", "ndots:2")
    ok(rl, "sandbox", "create", "cli", "--network", "bweb")
    addrs = in_sandbox(rl, "api", "ip -br addr show web0")
    assert "10.93.0.20/24" in addrs and "fd93::20/64" in addrs
    assert in_sandbox(rl, "api", "hostname; cat /etc/hostname").split() == ["apihost"] * 2
    hosts = in_sandbox(rl, "api", "cat /etc/hosts").splitlines()
    assert "10.1.2.3\tdb" in hosts and "fd00::5\tdb6" in hosts
    assert "10.93.0.20\tapihost api backend svc" in hosts
    assert in_sandbox(rl, "api", "cat /etc/resolv.conf").splitlines() == [
        "search dns.podman example.com", "nameserver 10.93.0.1", "nameserver fd93::1",
        "options ndots:2"]
    # The network-wide alias resolves through burrow-dns from another sandbox, over v4 and v6.
    got = in_sandbox(rl, "cli", "getent ahosts svc | awk '{print $1}' | sort -u").split()
    assert set(got) == {"10.93.0.20", "fd93::20"}
    # The hostname is api's own: other sandboxes keep theirs.
    assert "apihost" not in in_sandbox(rl, "cli", "hostname")
    inspect = json.loads(ok(rl, "sandbox", "inspect", "api"))
    assert inspect["created"].endswith("Z") and "T" in inspect["created"]
    assert inspect["hostname"] == "apihost" and inspect["add_hosts"] == ["db:10.1.2.3",
                                                                         "db6:fd00::5"]


def test_network_none_is_loopback_only(rl: Any) -> None:
    ok(rl, "sandbox", "create", "iso", "--network", "none")
    links = in_sandbox(rl, "iso", "ip -br link").split("\n")
    assert [ln.split()[0] for ln in links if ln.strip()] == ["lo"]
    assert "UP" in links[0] or "UNKNOWN" in links[0]
    assert in_sandbox(rl, "iso", "ip -br addr show lo").split()[2] == "127.0.0.1/8"
    res = rl.burrow("sandbox", "create", "iso2", "--network", "none", "-p", "8080:80")
    assert res.rc == 1 and "--network none" in res.err
    assert json.loads(ok(rl, "sandbox", "inspect", "iso"))["networks"] == {}
    ok(rl, "sandbox", "rm", "iso", timeout=60)


def test_publish_without_host_port_is_chosen_reported_and_forwarded(rl: Any) -> None:
    res = rl.burrow("sandbox", "create", "rp", "-p", "127.0.0.1:9000-9002:80")
    assert res.rc == 1 and "different lengths: 3 vs 1" in res.err
    ok(rl, "sandbox", "create", "rp", "-p", "127.0.0.1::80")
    (row,) = json.loads(ok(rl, "port", "ls", "rp", "--format", "json"))
    assert row["container_port"] == 80 and row["host_ip"] == "127.0.0.1"
    port = row["host_port"]
    assert 1024 < port <= 65535
    assert json.loads(ok(rl, "sandbox", "inspect", "rp"))["ports"][0]["host_port"] == port
    assert ok(rl, "port", "ls", "--noheading").split()[:4] == [
        "rp", f"127.0.0.1:{port}:80/tcp", "127.0.0.1", str(port)]
    srv = serve(rl, "rp", "t:80", "rp")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"hi")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b"rp:hi"
    finally:
        srv.kill()
        srv.wait()


def test_network_commands_as_podman(rl: Any) -> None:
    ok(rl, "network", "create", "na", "--label", "team=a")
    ok(rl, "network", "create", "nb", "--internal")
    ok(rl, "sandbox", "create", "user", "--network", "na")
    assert ok(rl, "network", "ls", "-q").split() == ["na", "nb"]  # sorted by name
    table = ok(rl, "network", "ls", "--noheading").splitlines()
    assert [ln.split()[0] for ln in table] == ["na", "nb"] and table[1].split()[-2:] == ["yes",
                                                                                       "yes"]
    assert ok(rl, "network", "ls", "--filter", "label=team=a", "-q").split() == ["na"]
    assert ok(rl, "network", "ls", "--filter", "dangling=true", "-q").split() == ["nb"]
    assert ok(rl, "network", "ls", "--format", "{{.Name}} {{.Internal}}").split("\n")[:2] == [
        "na false", "nb true"]
    rows = json.loads(ok(rl, "network", "ls", "--format", "json"))
    assert rows == json.loads(ok(rl, "network", "inspect", "na", "nb"))  # Podman's objects
    assert {"dns_enabled", "network_interface", "subnets", "ipv6_enabled", "internal",
            "created"} <= set(rows[0])
    res = rl.burrow("network", "ls", "--format", "yaml")
    assert res.rc == 2 and "table, json or a Go template" in res.err
    assert rl.burrow("network", "exists", "na").rc == 0
    assert (rl.burrow("network", "exists", "nope").rc, rl.burrow("network", "exists", "nope").out) \
        == (1, "")
    res = rl.burrow("network", "inspect", "na", "nope", "--format", "{{.Name}}")
    assert res.rc == 1 and res.out.split() == ["na"] and "nope" in res.err
    # The default network, made by a sandbox on it, unused once that sandbox is gone.
    ok(rl, "sandbox", "create", "tmp")
    ok(rl, "sandbox", "rm", "tmp", timeout=60)
    # prune asks, and no answer (a script without -f) is no; -f keeps the default network.
    res = rl.run([str(BURROW), "network", "prune"], input="")
    assert res.rc == 1 and "Are you sure" in res.err
    assert ok(rl, "network", "ls", "-q").split() == ["burrow", "na", "nb"]
    # --filter as Podman's prune: label, label!, until only; nothing matches, nothing goes.
    ok(rl, "network", "create", "nc", "--label", "keep")
    assert ok(rl, "network", "prune", "-f", "--filter", "until=24h").split() == []
    assert ok(rl, "network", "prune", "-f", "--filter", "label=keep").split() == ["nc"]
    res = rl.burrow("network", "prune", "-f", "--filter", "name=nb")
    assert res.rc != 0 and "KEY one of label, label!, until" in res.err
    assert ok(rl, "network", "prune", "-f").split() == ["nb"]
    assert ok(rl, "network", "ls", "-q").split() == ["burrow", "na"]
    # rm goes on past a failure: na is used, nope is missing; -f removes the user first.
    res = rl.burrow("network", "rm", "nope", "na")
    assert res.rc == 1 and "failed for 2 of 2: nope, na" in res.err
    out = ok(rl, "network", "rm", "-f", "na", timeout=60)
    assert out.split("\n")[:2] == ["removed sandbox user", "na"]
    assert json.loads(ok(rl, "sandbox", "ls", "--format", "json")) == []
    # The default network stays, as Podman refuses `network rm podman`, -f or not.
    for argv in (("network", "rm", "burrow"), ("network", "rm", "-f", "burrow")):
        res = rl.burrow(*argv)
        assert res.rc == 1 and "default network burrow cannot be removed" in res.err
    assert "burrow" in ok(rl, "network", "ls", "-q").split()


def test_sandbox_rm_goes_on_past_a_failure(rl: Any) -> None:
    for n in ("ra", "rb"):
        ok(rl, "sandbox", "create", n, "--network", "none")
    assert ok(rl, "sandbox", "ls", "-q").split() == ["ra", "rb"]
    assert [ln.split()[0] for ln in ok(rl, "sandbox", "ls", "--noheading").splitlines()] == [
        "ra", "rb"]
    res = rl.burrow("sandbox", "rm", "ra", "missing", "rb", timeout=60)
    assert res.rc == 1 and "sandbox rm failed for 1 of 3: missing" in res.err
    assert "ra" in res.out and "rb" in res.out
    assert json.loads(ok(rl, "sandbox", "ls", "--format", "json")) == []


def test_network_reload_keeps_addresses_and_macs(rl: Any) -> None:
    ok(rl, "network", "create", "rl1", "--subnet", "10.94.0.0/24")
    ok(rl, "sandbox", "create", "r1", "--network", "rl1")
    ok(rl, "sandbox", "create", "r2", "--network", "rl1")
    show = "cat /sys/class/net/eth0/address; ip -br addr show eth0 | cut -c17-"
    before = in_sandbox(rl, "r1", show)
    assert ok(rl, "network", "reload", "r1").split() == ["r1"]
    assert in_sandbox(rl, "r1", show) == before  # the same MAC and addresses
    assert "10.94.0.3" in in_sandbox(rl, "r1", "getent hosts r2")
    assert ok(rl, "network", "reload", "--all").split() == ["r1", "r2"]
    res = rl.burrow("network", "reload", "r1", "nope")
    assert res.rc == 1 and "failed for 1 of 2: nope" in res.err


def test_connector_of_a_running_world_is_not_ignored(rl: Any) -> None:
    for tool in ("slirp4netns", "pasta"):
        if not shutil.which(tool):
            pytest.skip(f"environment: {tool} is not installed")
    ok(rl, "--connector", "slirp4netns", "up", timeout=60)
    res = rl.burrow("--connector", "pasta", "sandbox", "create", "x")
    assert res.rc == 1 and "uses slirp4netns, not pasta" in res.err and "burrow down" in res.err
    assert json.loads(ok(rl, "sandbox", "ls", "--format", "json")) == []
    ok(rl, "--connector", "slirp4netns", "status")
    ok(rl, "--connector", "pasta", "down")


def test_piped_output_has_no_escape_codes(rl: Any) -> None:
    res = rl.run(["sh", "-c", f"{BURROW} --help | cat; {BURROW} status | cat"])
    assert "\033[" not in res.out and "\033[" not in res.err


def test_network_none_comes_back_up_after_the_namespace_died(rl: Any) -> None:
    from tests.integration.test_rootless_faults import kill

    ok(rl, "sandbox", "create", "iso", "--network", "none")
    kill(json.loads(ok(rl, "status", "--format", "json"))["namespace"]["holder_pid"])
    assert "re-created sandbox iso" in ok(rl, "up", timeout=120)
    assert in_sandbox(rl, "iso", "ip -br addr show lo").split()[2] == "127.0.0.1/8"
