"""Real rootful Podman 4.3.1 with burrow as its network backend (`burrow podman enable --system`).

Everything runs in a private net+mount namespace (tests/e2e/podman_env.RootfulWorld): the
namespace is "the host" for Podman; /run, /etc/containers and storage are private to it.
The tests share one world and run in file order: the last one stops everything and checks that
no veth, bridge, firewall rule or DNS entry is left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.podman_env import IMAGE, RootfulWorld, probe, start_echo, wait_for
from tests.nsutil import have

pytestmark = [pytest.mark.e2e, pytest.mark.root]

MAC_A1, MAC_A2, MAC_C = "92:d0:c6:0a:29:10", "92:d0:c6:0a:29:20", "92:d0:c6:0a:29:30"
OUTSIDE4, OUTSIDE6 = "192.0.2.1", "2001:db8::1"  # the world's "uplink": a veth in its host ns


@pytest.fixture(scope="module")
def world(podman_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootfulWorld]:
    if not have("dig"):
        pytest.skip("environment: dig (bind9-dnsutils) is not installed")
    w = RootfulWorld(tmp_path_factory.mktemp("rootful"), podman_rootfs)
    echo = []
    try:
        w.run(["ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer"])
        w.run(["ip", "link", "set", "uplink-peer", "up"])
        w.run(["ip", "addr", "add", f"{OUTSIDE4}/24", "dev", "uplink"])
        w.run(["ip", "addr", "add", f"{OUTSIDE6}/64", "dev", "uplink", "nodad"])
        w.run(["ip", "link", "set", "uplink", "up"])
        w.podman("network", "create", "--subnet", "10.89.7.0/24", "--subnet", "fd89:7::/64", "n1")
        w.podman("network", "create", "--subnet", "10.89.8.0/24", "n2")
        w.podman("network", "create", "--internal", "--subnet", "10.89.9.0/24", "nint")
        w.podman("network", "create", "-o", "isolate=true", "--subnet", "10.89.10.0/24", "niso1")
        w.podman("network", "create", "-o", "isolate=true", "--subnet", "10.89.11.0/24", "niso2")
        w.podman("network", "create", "--subnet", "10.89.12.0/24", "n3")
        w.podman(
            "run", "-d", "--name", "pda", "--hostname", "pda",
            "--network", f"n1:ip=10.89.7.10,ip=fd89:7::10,mac={MAC_A1},alias=pda-alias1",
            "--network", f"n2:ip=10.89.8.10,mac={MAC_A2},alias=pda-alias2",
            "-p", "127.0.0.1:18080:80", "-p", "127.0.0.1:18053:53/udp",
            "-p", "127.0.0.1:18100-18102:8100-8102", "-p", f"[{OUTSIDE6}]:18090:80",
            IMAGE, "sleep", "3600")
        w.podman("run", "-d", "--name", "pdb", "--hostname", "pdb",
                 "--network", "n1:ip=10.89.7.11,ip=fd89:7::11,alias=pdb-alias1",
                 "--network", "n2:ip=10.89.8.11,alias=pdb-alias2", IMAGE, "sleep", "3600")
        w.podman("run", "-d", "--name", "pdc", "--network", "n2", "--ip", "10.89.8.12",
                 "--mac-address", MAC_C, "--network-alias", "pdc-alias", IMAGE, "sleep", "3600")
        w.podman("run", "-d", "--name", "pdi", "--network", "nint", IMAGE, "sleep", "3600")
        w.podman("run", "-d", "--name", "pdx", "--network", "niso1", IMAGE, "sleep", "3600")
        w.podman("run", "-d", "--name", "pdy", "--network", "niso2", IMAGE, "sleep", "3600")
        echo.append(start_echo(w.pid("pda"), ["80/tcp", "53/udp", "8100/tcp", "8101/tcp", "8102/tcp"]))
        yield w
    finally:
        for p in echo:
            p.kill()
            p.wait()
        w.close()


def inspect(w: RootfulWorld, ctr: str) -> dict[str, Any]:
    return json.loads(w.podman("inspect", ctr).stdout)[0]["NetworkSettings"]["Networks"]


def dig(w: RootfulWorld, ctr: str, server: str, name: str, rtype: str = "A") -> tuple[str, set[str]]:
    res = w.in_ctr(ctr, ["dig", "+tries=1", "+time=2", f"@{server}", name, rtype], check=False)
    status = re.search(r"status: (\w+)", res.stdout)
    answers = {ln.split()[-1] for ln in res.stdout.splitlines()
               if ln and not ln.startswith(";") and f"\t{rtype}\t" in ln}
    return (status.group(1) if status else "TIMEOUT"), answers


def ping(w: RootfulWorld, ctr: str, ip: str) -> bool:
    """Ping from the container's netns (host ping: Podman 4.3 drops CAP_NET_RAW in containers)."""
    return w.in_ctr(ctr, ["ping", "-c1", "-W2", ip], check=False).returncode == 0


def test_enable_shows_burrow_in_status(world: RootfulWorld) -> None:
    assert "+helper_binaries_dir = [" in world.enable_out
    info = json.loads(world.burrow("podman", "status", "--system", "--format", "json"))
    assert info["podman_uses_burrow"], info
    assert info["netavark"].endswith("/helpers/netavark") and info["netavark_is_burrow"]
    assert info["aardvark_dns_is_burrow"]
    assert info["dropin"] == "/etc/containers/containers.conf.d/99-burrow.conf"
    # Idempotent: a second enable changes nothing.
    again = world.burrow("podman", "enable", "--system", "--helper-dir", str(world.base / "helpers"))
    assert "nothing to change" in again


def test_static_ip_ip6_mac_alias_two_networks(world: RootfulWorld) -> None:
    nets = inspect(world, "pda")
    assert set(nets) == {"n1", "n2"}
    assert nets["n1"]["IPAddress"] == "10.89.7.10" and nets["n1"]["GlobalIPv6Address"] == "fd89:7::10"
    assert nets["n1"]["MacAddress"] == MAC_A1 and nets["n2"]["MacAddress"] == MAC_A2
    assert nets["n2"]["IPAddress"] == "10.89.8.10" and nets["n1"]["Gateway"] == "10.89.7.1"
    assert "pda-alias1" in nets["n1"]["Aliases"] and "pda-alias2" in nets["n2"]["Aliases"]
    addrs = world.podman("exec", "pda", "ip", "addr").stdout
    for a in ("10.89.7.10/24", "fd89:7::10/64", "10.89.8.10/24", MAC_A1, MAC_A2):
        assert a in addrs
    c = inspect(world, "pdc")["n2"]
    assert c["IPAddress"] == "10.89.8.12" and c["MacAddress"] == MAC_C and "pdc-alias" in c["Aliases"]
    resolv = world.podman("exec", "pda", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.89.7.1" in resolv and "nameserver fd89:7::1" in resolv
    assert "nameserver 10.89.8.1" in resolv and "search dns.podman" in resolv


def test_ping_v4_v6_and_by_name(world: RootfulWorld) -> None:
    assert ping(world, "pdb", "10.89.7.10")
    assert ping(world, "pdb", "10.89.8.10")
    assert ping(world, "pdb", "fd89:7::10")
    # By name, through the container's own resolv.conf (busybox nslookup; search dns.podman).
    out = world.podman("exec", "pdb", "nslookup", "pda").stdout
    assert "10.89.7.10" in out and "10.89.8.10" in out and "fd89:7::10" in out
    assert ping(world, "pda", OUTSIDE4)  # egress to the world's uplink (masqueraded)


def test_dns_names_aliases_and_scoping(world: RootfulWorld) -> None:
    # podman.md §2, aardvark 1.4 resolution rules, asked from pdb (on n1 and n2).
    assert dig(world, "pdb", "10.89.7.1", "pda") == ("NOERROR", {"10.89.7.10", "10.89.8.10"})
    assert dig(world, "pdb", "10.89.7.1", "pda", "AAAA") == ("NOERROR", {"fd89:7::10"})
    assert dig(world, "pdb", "fd89:7::1", "pda-alias1") == ("NOERROR", {"10.89.7.10"})
    assert dig(world, "pdb", "10.89.7.1", "pda-alias2") == ("NOERROR", {"10.89.8.10"})
    # `.dns.podman` names: burrow-dns strips the search domain in every network, as aardvark
    # HEAD does (spec/aardvark.md §2.1 #6: 1.4's listen-network-only stripping is a bug not
    # to copy), so they answer exactly like the bare name.
    assert dig(world, "pdb", "10.89.7.1", "pda.dns.podman") == ("NOERROR", {"10.89.7.10", "10.89.8.10"})
    assert dig(world, "pdb", "10.89.7.1", "pda-alias2.dns.podman") == ("NOERROR", {"10.89.8.10"})
    assert dig(world, "pdc", "10.89.8.1", "pda.dns.podman") == ("NOERROR", {"10.89.8.10"})
    assert dig(world, "pdc", "10.89.8.1", "pda-alias1.dns.podman")[0] == "NXDOMAIN"
    assert dig(world, "pdb", "10.89.8.1", "pdc-alias") == ("NOERROR", {"10.89.8.12"})
    # pdc shares only n2 with pda: it sees pda's n2 address and none of its n1-only names.
    assert dig(world, "pdc", "10.89.8.1", "pda") == ("NOERROR", {"10.89.8.10"})
    # (a single label nobody knows is forwarded upstream, unreachable here: no answer)
    assert dig(world, "pdc", "10.89.8.1", "pda-alias1")[1] == set()
    # The short container id is an alias too.
    short = world.podman("inspect", "-f", "{{.Id}}", "pda").stdout.strip()[:12]
    assert dig(world, "pdb", "10.89.8.1", short) == ("NOERROR", {"10.89.8.10", "10.89.7.10"})


def test_published_ports_from_host(world: RootfulWorld) -> None:
    assert probe(world.run, "tcp", "127.0.0.1", 18080) == "tcp80:hi"
    assert probe(world.run, "udp", "127.0.0.1", 18053) == "udp53:hi"
    for port in (18100, 18101, 18102):
        assert probe(world.run, "tcp", "127.0.0.1", port) == f"tcp{port - 10000}:hi"
    assert probe(world.run, "tcp", OUTSIDE6, 18090) == "tcp80:hi"  # v6 DNAT


def test_internal_network_has_no_egress(world: RootfulWorld) -> None:
    routes = world.podman("exec", "pdi", "ip", "route").stdout
    assert "default" not in routes
    assert not ping(world, "pdi", OUTSIDE4)
    assert not ping(world, "pdi", "10.89.7.10")
    assert "10.89.9." in world.podman("exec", "pdi", "ip", "addr").stdout


def test_isolate(world: RootfulWorld) -> None:
    y = inspect(world, "pdy")["niso2"]["IPAddress"]
    x = inspect(world, "pdx")["niso1"]["IPAddress"]
    assert ping(world, "pdx", OUTSIDE4)  # isolated, not internal: egress works
    assert not ping(world, "pdx", y)
    assert not ping(world, "pdy", x)
    # As with netavark 1.4, isolate=true separates isolated networks from each other; a
    # non-isolated network (n1) still reaches them through the host.


def test_network_connect_disconnect(world: RootfulWorld) -> None:
    w = world
    w.podman("network", "connect", "--ip", "10.89.12.50", "--alias", "pdb-alias3", "n3", "pdb")
    assert "10.89.12.50/24" in w.podman("exec", "pdb", "ip", "addr", "show", "eth2").stdout
    assert dig(w, "pdb", "10.89.12.1", "pdb-alias3") == ("NOERROR", {"10.89.12.50"})
    assert w.run(["ping", "-c1", "-W2", "10.89.12.50"], check=False).returncode == 0
    bridge = json.loads(w.podman("network", "inspect", "n3").stdout)[0]["network_interface"]
    w.podman("network", "disconnect", "n3", "pdb")
    assert w.podman("exec", "pdb", "ip", "link", "show", "eth2", check=False).returncode != 0
    assert bridge not in {ln["ifname"] for ln in w.links()}
    assert "10.89.12." not in w.run(["nft", "list", "ruleset"]).stdout
    assert "n3" not in w.run(["ls", "/run/containers/networks/aardvark-dns"]).stdout.split()
    # pdb's other networks still work.
    assert ping(w, "pdb", "10.89.7.10")


def test_network_reload_restores_firewall(world: RootfulWorld) -> None:
    w = world
    w.run(["nft", "flush", "ruleset"])
    assert probe(w.run, "tcp", "127.0.0.1", 18080) == ""
    w.podman("network", "reload", "--all")
    assert wait_for(lambda: probe(w.run, "tcp", "127.0.0.1", 18080) == "tcp80:hi")
    assert probe(w.run, "udp", "127.0.0.1", 18053) == "udp53:hi"
    assert ping(w, "pda", OUTSIDE4)
    assert dig(w, "pdb", "10.89.7.1", "pda-alias1") == ("NOERROR", {"10.89.7.10"})


def snapshot(w: RootfulWorld) -> tuple[Any, ...]:
    links = sorted(ln["ifname"] for ln in w.links())
    # -s: without counters (iptables-nft rules count packets, which the probes add to).
    rules = w.run(["nft", "-s", "list", "ruleset"]).stdout
    dns = w.run(["sh", "-c", "cd /run/containers/networks/aardvark-dns && "
                 "for f in *; do [ $f = aardvark.pid ] || { echo \"== $f\"; cat \"$f\"; }; done"],
                check=False).stdout
    ctrs = w.podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    return links, rules, dns, sorted(ctrs)


def test_errors_are_readable_and_leave_no_state(world: RootfulWorld) -> None:
    w = world
    before = snapshot(w)

    def fails(*args: str) -> str:
        res = w.podman("run", "--rm", *args, IMAGE, "true", check=False)
        assert res.returncode != 0, args
        assert res.stderr.startswith("Error: "), res.stderr
        return res.stderr

    # Podman 4.3 itself rejects these three before netavark is called (its own IPAM and port
    # reservation); the message stays a one-liner.
    assert "10.99.0.5 not in any subnet" in fails("--network", "n1", "--ip", "10.99.0.5")
    assert "already allocated" in fails("--network", "n1", "--ip", "10.89.7.10")
    assert "address already in use" in fails("--network", "n1", "-p", "127.0.0.1:18080:80")
    # Errors found by the backend come back as `Error: ...netavark: <reason>`.
    err = fails("--network", "n2:mac=01:00:5e:00:00:01")
    assert re.search(r"^Error: .*netavark: .*mac", err, re.I), err
    w.podman("network", "create", "--subnet", "10.89.13.0/24", "nbad")
    cfg = w.base / "etc-containers" / "networks" / "nbad.json"
    net = json.loads(cfg.read_text())
    net["network_interface"] = "bad/name"
    cfg.write_text(json.dumps(net))
    err = fails("--network", "nbad")
    assert "netavark: network nbad: bridge interface name 'bad/name' is not valid" in err, err
    w.podman("network", "rm", "nbad")
    assert snapshot(w) == before


def test_stop_rm_leaves_nothing(world: RootfulWorld) -> None:
    w = world
    w.podman("stop", "-t", "0", "pda", "pdb", "pdc", "pdi", "pdx", "pdy")
    w.podman("rm", "-a")
    links = w.links()
    assert not [ln["ifname"] for ln in links if ln["ifname"] not in ("uplink", "uplink-peer")
                and ln.get("linkinfo", {}).get("info_kind") in ("veth", "bridge")]
    rules = w.run(["nft", "list", "ruleset"]).stdout
    # As Netavark 2.x, the base rules (the masquerade mark, the jumps into its chains) stay
    # after the last teardown; nothing of a network or a container may.
    assert not re.search(r"10\.89\.|fd89:|dnat|\bnv_|saddr .* masquerade", rules), rules
    dns_dir = w.run(["ls", "-A", "/run/containers/networks/aardvark-dns"], check=False).stdout.split()
    assert dns_dir == [], dns_dir
    # The DNS server exits after the last teardown.
    assert wait_for(lambda: not [c for c in w.ns_cmdlines() if "burrow-dns" in c or "netns.dns" in c])
