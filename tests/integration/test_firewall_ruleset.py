"""Kernel-side checks of the batches: real listings, execs per call, flush + reload, races.

Everything runs inside a throwaway "host" namespace through `argv_prefix` (nsenter).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import pytest

from netns.errors import BurrowError
from netns.firewall import select
from netns.firewall.runner import ExecResult, subprocess_runner
from netns.firewall.state import StateStore
from netns.firewall.types import NetworkFw, PortFw
from netns.schema import PortMapping
from tests.nsutil import Netns

NID = "53ce4390" * 8
CID = "ab" * 32


class Counting:
    """The real runner, counting the execs of one call."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        with self.lock:
            self.argvs.append(list(argv))
        return subprocess_runner(argv, stdin)

    def tools(self) -> list[str]:
        # argv = nsenter -t PID -n -m -- TOOL ...
        return [a[a.index("--") + 1] for a in self.argvs]


def network(dual: bool = True, name: str = "fwnet", nid: str = NID, bridge: str = "fwbr0",
            third: int = 88, dns_port: int | None = None) -> NetworkFw:
    subnets = [ip_network(f"10.{third}.0.0/16")]
    gws = [ip_address(f"10.{third}.0.1")]
    if dual:
        subnets.append(ip_network(f"fd{third}::/64"))
        gws.append(ip_address(f"fd{third}::1"))
    return NetworkFw(name=name, id=nid, bridge=bridge, subnets=tuple(subnets),
                     gateways=tuple(gws), dns_port=dns_port)


def forward(net: NetworkFw, host_port: int = 8080, cid: str = CID, proto: str = "tcp") -> PortFw:
    v6 = IPv6Address(f"{net.subnets[1].network_address}2") if len(net.subnets) > 1 else None
    return PortFw(cid, net, IPv4Address(str(net.subnets[0].network_address + 2)), v6,
                  (PortMapping("", 80, host_port, 1, proto),))


def nft_list(ns: Netns) -> str:
    return ns.run(["nft", "list", "ruleset"]).stdout


GOLDEN_NFT = """table inet netavark {
	chain INPUT {
		type filter hook input priority filter; policy accept;
		ip saddr 10.88.0.0/16 meta l4proto { tcp, udp } th dport 53 accept
	}

	chain FORWARD {
		type filter hook forward priority filter; policy accept;
		ct state invalid drop
		ct mark & 0x00001000 == 0x00001000 accept
		jump NETAVARK-ISOLATION-1
		ip daddr 10.88.0.0/16 ct state established,related accept
		ip saddr 10.88.0.0/16 accept
	}

	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00002000 == 0x00002000 masquerade
		ip saddr 10.88.0.0/16 jump nv_53ce4390_10_88_0_0_nm16
	}

	chain PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump NETAVARK-HOSTPORT-DNAT
	}

	chain OUTPUT {
		type nat hook output priority -100; policy accept;
		fib daddr type local jump NETAVARK-HOSTPORT-DNAT
	}

	chain NETAVARK-HOSTPORT-DNAT {
		ip daddr 10.88.0.1 meta l4proto { tcp, udp } th dport 53 dnat ip to 10.88.0.1:1053
		tcp dport 8080 jump nv_53ce4390_10_88_0_0_nm16_dnat
	}

	chain NETAVARK-HOSTPORT-SETMARK {
		meta mark set meta mark | 0x00002000
	}

	chain NETAVARK-ISOLATION-1 {
	}

	chain NETAVARK-ISOLATION-2 {
	}

	chain NETAVARK-ISOLATION-3 {
		oifname "fwbr0" drop
		jump NETAVARK-ISOLATION-2
	}

	chain nv_53ce4390_10_88_0_0_nm16 {
		ip daddr 10.88.0.0/16 accept
		ip daddr != 224.0.0.0/4 masquerade
	}

	chain nv_53ce4390_10_88_0_0_nm16_dnat {
		ip saddr 10.88.0.0/16 tcp dport 8080 jump NETAVARK-HOSTPORT-SETMARK
		ip saddr 127.0.0.1 tcp dport 8080 jump NETAVARK-HOSTPORT-SETMARK
		tcp dport 8080 ct mark set ct mark | 0x00001000 dnat ip to 10.88.0.2:80
	}
}
"""


def test_nftables_golden_listing_and_one_exec(host_ns: Netns, tmp_path: Path) -> None:
    run = Counting()
    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]), runner=run)
    net = network(dual=False, dns_port=1053)
    fw.setup([net], [forward(net)])
    assert nft_list(host_ns) == GOLDEN_NFT
    assert run.tools() == ["nft"]
    fw.setup([net], [forward(net)])  # the same container again: the table is read, no doubles
    assert nft_list(host_ns) == GOLDEN_NFT
    assert run.tools() == ["nft", "nft", "nft"]


def test_nftables_teardown_removes_ports_then_table(host_ns: Netns, tmp_path: Path) -> None:
    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
    net = network()
    fw.setup([net], [forward(net)])
    fw.teardown([], [forward(net)])
    listing = nft_list(host_ns)
    # The container's rules go; its network's (empty) dnat chain stays until the network goes.
    assert "dport 8080" not in listing and "nv_53ce4390_10_88_0_0_nm16 {" in listing
    fw.teardown([net], [forward(net)])
    assert_no_rules(nft_list(host_ns))


BASE_LEFT = ["meta mark & 0x00002000 == 0x00002000 masquerade",
             "meta mark set meta mark | 0x00002000",
             "fib daddr type local jump NETAVARK-HOSTPORT-DNAT",
             "fib daddr type local jump NETAVARK-HOSTPORT-DNAT",
             "ct state invalid drop", "ct mark & 0x00001000 == 0x00001000 accept",
             "jump NETAVARK-ISOLATION-1", "jump NETAVARK-ISOLATION-2"]


def assert_no_rules(listing: str) -> None:
    """Only what Netavark 2.x keeps after the last teardown: the chains and the base rules."""
    body = [ln.strip() for ln in listing.splitlines()
            if ln.strip() and not ln.strip().startswith(("table inet netavark", "chain ", "type ", "}"))]
    assert sorted(body) == sorted(BASE_LEFT), listing
    assert "nv_" not in listing


def test_nftables_leaves_other_tables_alone(host_ns: Netns, tmp_path: Path) -> None:
    host_ns.run(["nft", "add table inet other; add chain inet other c; add rule inet other c accept"])
    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
    fw.setup([network()], [])
    fw.teardown([network()], [])
    other = host_ns.run(["nft", "list", "table", "inet", "other"]).stdout
    assert other == "table inet other {\n\tchain c {\n\t\taccept\n\t}\n}\n"
    assert_no_rules(host_ns.run(["nft", "list", "table", "inet", "netavark"]).stdout)


@pytest.mark.parametrize("driver", ["nftables", "iptables"])
def test_reload_after_flush(host_ns: Netns, tmp_path: Path, driver: str) -> None:
    fw = select(driver, tmp_path, {}, argv_prefix=host_ns.argv([]))
    net = network()
    fw.setup([net], [forward(net)])
    before = nft_list(host_ns)
    host_ns.run(["nft", "flush", "ruleset"])
    assert nft_list(host_ns) == ""
    fw.reload()
    assert nft_list(host_ns) == before


def iptables_save(ns: Netns, v6: bool = False) -> str:
    out = ns.run(["ip6tables-save" if v6 else "iptables-save"]).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def test_iptables_execs_per_setup(host_ns: Netns, tmp_path: Path) -> None:
    run = Counting()
    fw = select("iptables", tmp_path, {}, argv_prefix=host_ns.argv([]), runner=run)
    v4 = network(dual=False)
    fw.setup([v4], [forward(v4)])
    assert run.tools() == ["iptables-restore"]  # v4 only: v6 is never exec'd
    dual = network(name="fwnet2", nid="77777777", bridge="fwbr2", third=77)
    fw.setup([dual], [forward(dual, host_port=9090, cid="cd" * 32)])
    assert run.tools()[1:] == ["iptables-restore", "ip6tables-restore"]
    fw.teardown([dual, v4], [forward(v4), forward(dual, host_port=9090, cid="cd" * 32)])
    assert run.tools()[3:] == ["iptables-restore", "ip6tables-restore"]
    assert "NETAVARK-DN-" not in iptables_save(host_ns)


def test_iptables_teardown_keeps_base_chains_and_others_untouched(host_ns: Netns,
                                                                   tmp_path: Path) -> None:
    host_ns.run(["iptables", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT"])
    host_ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24",
                 "-j", "MASQUERADE"])
    fw = select("iptables", tmp_path, {}, argv_prefix=host_ns.argv([]))
    net = network()
    fw.setup([net], [forward(net)], fresh=[net.bridge])
    fw.setup([net], [forward(net)])  # the same again: the kernel is asked, nothing doubles
    saved = iptables_save(host_ns)
    assert saved.count("-j NETAVARK_FORWARD") == 1
    assert saved.count("-A NETAVARK-HOSTPORT-DNAT ") == 1
    assert "-A FORWARD -s 192.0.2.0/24 -j ACCEPT" in saved
    fw.teardown([], [forward(net)])
    assert "NETAVARK-HOSTPORT-DNAT -p tcp" not in iptables_save(host_ns)
    assert "DNAT --to-destination" not in iptables_save(host_ns, v6=True)
    fw.teardown([net], [])
    # What netavark 1.4 leaves too: its base chains, their jumps, the two mark rules.
    for family in (False, True):
        left = iptables_save(host_ns, v6=family)
        assert f"NETAVARK-{net.hash}" not in left and "NETAVARK-DN-" not in left
        assert "-A NETAVARK-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000" in left
        assert '-A FORWARD -m comment --comment "netavark firewall plugin rules"' in left
        assert "-A NETAVARK_FORWARD" not in left
    assert "-A FORWARD -s 192.0.2.0/24 -j ACCEPT" in iptables_save(host_ns)
    assert "-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE" in iptables_save(host_ns)


def test_iptables_reload_after_flush_asks_the_kernel(host_ns: Netns, tmp_path: Path) -> None:
    run = Counting()
    fw = select("iptables", tmp_path, {}, argv_prefix=host_ns.argv([]), runner=run)
    net = network(dual=False)
    fw.setup([net], [forward(net)], fresh=[net.bridge])
    before = iptables_save(host_ns)
    host_ns.run(["iptables", "-F"])
    host_ns.run(["iptables", "-t", "nat", "-F"])
    fw.reload()  # reads the tables once, adds what is missing, flushes nothing
    assert iptables_save(host_ns) == before
    assert run.tools()[1:] == ["iptables-save", "iptables-restore"]
    fw.reload()  # nothing missing: no batch at all
    assert run.tools()[3:] == ["iptables-save"]
    assert iptables_save(host_ns) == before


def test_failed_batch_reports_and_keeps_state(host_ns: Netns, tmp_path: Path) -> None:
    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
    net = network()
    fw.setup([net], [])
    state = StateStore(tmp_path).load()
    # Point one jump at a missing chain on the way to nft, so the kernel refuses the batch.
    broken = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]),
                    runner=lambda argv, stdin: subprocess_runner(argv, stdin.replace(
                        '"target":"NETAVARK-HOSTPORT-SETMARK"', '"target":"NOPE"')))
    with pytest.raises(BurrowError, match=r"^firewall \(nftables\): apply batch: ") as err:
        broken.setup([net], [forward(net)])
    assert "No such file or directory" in str(err.value)
    assert StateStore(tmp_path).load() == state
    assert "dnat" not in nft_list(host_ns)


def test_parallel_setups_all_land(host_ns: Netns, tmp_path: Path) -> None:
    net = network()
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
            fw.setup([net], [forward(net, host_port=10000 + i, cid=f"{i:064x}")])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listing = nft_list(host_ns)
    for i in range(8):
        assert f"tcp dport {10000 + i} jump" in listing


@pytest.mark.parametrize("driver", ["nftables", "iptables"])
def test_sctp_rules_load(host_ns: Netns, tmp_path: Path, driver: str) -> None:
    """sctp ports are matched by payload, so the rules load even without the sctp module.

    (Traffic can't be tested here: see test_firewall_traffic.test_sctp_traffic.)
    """
    fw = select(driver, tmp_path, {}, argv_prefix=host_ns.argv([]))
    net = network(dual=False)
    fw.setup([net], [forward(net, proto="sctp")])
    if driver == "nftables":
        assert "sctp dport 8080 jump nv_53ce4390_10_88_0_0_nm16_dnat" in nft_list(host_ns)
    else:
        assert ("-A NETAVARK-DN-" in iptables_save(host_ns)
                and "-p sctp -m sctp --dport 8080 -j DNAT --to-destination 10.88.0.2:80"
                in iptables_save(host_ns))


def test_state_layout_is_netavarks(host_ns: Netns, tmp_path: Path) -> None:
    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
    net = network()
    fw.setup([net], [forward(net)])
    data = json.loads((tmp_path / f"firewall/networks/{NID}").read_text())
    assert data["subnets"] == ["10.88.0.0/16", "fd88::/64"]
    assert data["network_hash_name"] == net.hash and data["isolation"] == "Never"
    assert (tmp_path / f"firewall/ports/{NID}_{CID}").exists()


# A network and a container as netavark 2.x lays them out (nft.rs), written by hand: podman0,
# 10.88.0.0/16, isolate=false, container 10.88.0.5 publishing 8088 -> 80.
NETAVARK2 = """table inet netavark {
	chain INPUT {
		type filter hook input priority filter; policy accept;
		ip saddr 10.88.0.0/16 meta l4proto { tcp, udp } th dport 53 accept
	}

	chain FORWARD {
		type filter hook forward priority filter; policy accept;
		ct state invalid drop
		ct mark & 0x00001000 == 0x00001000 accept
		jump NETAVARK-ISOLATION-1
		ip daddr 10.88.0.0/16 ct state established,related accept
		ip saddr 10.88.0.0/16 accept
	}

	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00002000 == 0x00002000 masquerade
		ip saddr 10.88.0.0/16 jump nv_2f259bab_10_88_0_0_nm16
	}

	chain PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump NETAVARK-HOSTPORT-DNAT
	}

	chain OUTPUT {
		type nat hook output priority -100; policy accept;
		fib daddr type local jump NETAVARK-HOSTPORT-DNAT
	}

	chain NETAVARK-HOSTPORT-DNAT {
		tcp dport 8088 jump nv_2f259bab_10_88_0_0_nm16_dnat
	}

	chain NETAVARK-HOSTPORT-SETMARK {
		meta mark set meta mark | 0x00002000
	}

	chain NETAVARK-ISOLATION-1 {
	}

	chain NETAVARK-ISOLATION-2 {
	}

	chain NETAVARK-ISOLATION-3 {
		oifname "podman0" drop
		jump NETAVARK-ISOLATION-2
	}

	chain nv_2f259bab_10_88_0_0_nm16 {
		ip daddr 10.88.0.0/16 accept
		ip daddr != 224.0.0.0/4 masquerade
	}

	chain nv_2f259bab_10_88_0_0_nm16_dnat {
		ip saddr 10.88.0.0/16 tcp dport 8088 jump NETAVARK-HOSTPORT-SETMARK
		ip saddr 127.0.0.1 tcp dport 8088 jump NETAVARK-HOSTPORT-SETMARK
		tcp dport 8088 ct mark set ct mark | 0x00001000 dnat ip to 10.88.0.5:80
	}
}
"""


def podman0() -> NetworkFw:
    return NetworkFw(name="podman", id="2f259bab" * 8, bridge="podman0",
                     subnets=(ip_network("10.88.0.0/16"),), gateways=(ip_address("10.88.0.1"),))


@pytest.mark.parametrize("burrow_state", ["empty", "knows it all"])
def test_netavark2_ruleset_survives_burrows_setup_and_teardown(
        host_ns: Netns, tmp_path: Path, burrow_state: str) -> None:
    """burrow's first setup on empty state used to flush `inet netavark`; now it adds to it."""
    if burrow_state == "knows it all":  # a stale ledger: burrow made it all once, then left
        fw0 = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
        fw0.setup([network()], [forward(network())])
        fw0.teardown([network()], [forward(network())])
        host_ns.run(["nft", "delete table inet netavark"])
    host_ns.run(["nft", "-f", "-"], input=NETAVARK2)
    assert nft_list(host_ns) == NETAVARK2
    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
    net = network(dual=False, third=77)
    fw.setup([net], [forward(net)], fresh=[net.bridge])
    listing = nft_list(host_ns)
    assert listing.count("meta mark set meta mark | 0x00002000") == 1  # base rules not doubled
    assert listing.count("jump NETAVARK-ISOLATION-1") == 1
    assert "tcp dport 8088 ct mark set ct mark | 0x00001000 dnat ip to 10.88.0.5:80" in listing
    assert "tcp dport 8080 ct mark set ct mark | 0x00001000 dnat ip to 10.77.0.2:80" in listing
    fw.teardown([net], [forward(net)])
    assert nft_list(host_ns) == NETAVARK2


def test_burrow_tears_down_netavark2s_container_and_network(host_ns: Netns,
                                                             tmp_path: Path) -> None:
    host_ns.run(["nft", "-f", "-"], input=NETAVARK2)
    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]))
    ctr = PortFw("c" * 64, podman0(), IPv4Address("10.88.0.5"), None,
                 (PortMapping("", 80, 8088, 1, "tcp"),))
    fw.teardown([], [ctr])
    assert "8088" not in nft_list(host_ns)
    fw.teardown([podman0()], [])
    assert_no_rules(nft_list(host_ns))


def test_nftables_container_teardown_deletes_by_handle(host_ns: Netns, tmp_path: Path) -> None:
    """Removing one of many containers costs no listing of the table; a table made again
    (other rules at the old handles) is never touched by stale handles."""
    stdins: list[str] = []

    def run(argv: Sequence[str], stdin: str) -> ExecResult:
        stdins.append(stdin)
        return subprocess_runner(argv, stdin)

    fw = select("nftables", tmp_path, {}, argv_prefix=host_ns.argv([]), runner=run)
    net = network(dual=False, third=77)
    p1, p2 = forward(net, 8081, "1" * 64), forward(net, 8082, "2" * 64)
    fw.setup([net], [p1], fresh=[net.bridge])
    fw.setup([net], [p2])
    del stdins[:]
    fw.teardown([], [p1])
    assert not any('"table": {"family": "inet", "name": "netavark"}}}]' in s for s in stdins)
    assert "dport 8081" not in nft_list(host_ns) and "dport 8082" in nft_list(host_ns)
    # Netavark 2.x's table replaces burrow's (a reboot-like flush, then netavark set up).
    host_ns.run(["nft", "delete table inet netavark"])
    host_ns.run(["nft", "-f", "-"], input=NETAVARK2)
    fw.teardown([], [p2])
    assert nft_list(host_ns) == NETAVARK2
