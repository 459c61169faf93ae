"""The state-driven transaction: files, one exec per call, rollback of state, the factory."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from netns.errors import BurrowError
from netns.firewall import select
from netns.firewall.none import NoFirewall
from netns.firewall.runner import ExecResult
from netns.firewall.state import (
    StateStore,
    network_from_json,
    network_to_json,
    port_from_json,
    port_key,
    port_to_json,
)
from tests.unit.test_firewall_rules import CID, NET_ID, net, pf, pm


class Recorder:
    def __init__(self, rc: int = 0) -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.rc = rc

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        self.calls.append((list(argv), stdin))
        # `nft -e` echoes the table with its handle when the batch made it.
        echo = '{"nftables":[{"add":{"table":{"family":"inet","name":"netavark","handle":7}}}]}'
        return ExecResult(self.rc, "" if self.rc or '"list"' in stdin else echo,
                          "Error: Could not process rule: No such file or directory\n"
                          if self.rc else "")


def files(cfg: Path) -> list[str]:
    root = cfg / "firewall"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_codec_round_trip() -> None:
    n = net(isolate="strict", dns_port=1053)
    assert network_from_json(json.loads(json.dumps(network_to_json(n))), "nanet1",
                             n.gateways) == n
    p = pf(pm(proto="tcp,udp", host_ip="10.0.0.1", rng=4))
    assert port_from_json(json.loads(json.dumps(port_to_json(p))), p.network) == p


def test_files_are_netavarks_serde_json(tmp_path: Path) -> None:
    """Byte for byte what Netavark 2.x's write_fw_config writes (state.rs, internal_types.rs)."""
    fw = select("nftables", tmp_path, {}, runner=Recorder())
    fw.setup([net(dual=False)], [pf(pm(), network=net(dual=False), v6=False)])
    root = tmp_path / "firewall"
    assert (root / "networks" / NET_ID).read_text() == (
        '{"subnets":["10.89.7.0/24"],"bridge_name":"nabr1","network_id":"' + NET_ID + '",'
        '"network_hash_name":"F0B0EECB945D8","isolation":"Never","dns_port":53}')
    assert (root / "ports" / f"{NET_ID}_{CID}").read_text() == (
        '{"container_id":"' + CID + '","network_id":"' + NET_ID + '","port_mappings":'
        '[{"host_ip":"","container_port":80,"host_port":8080,"range":1,"protocol":"tcp"}],'
        '"network_name":"nanet1","network_hash_name":"F0B0EECB945D8",'
        '"container_ip_v4":"10.89.7.2","subnet_v4":"10.89.7.0/24","container_ip_v6":null,'
        '"subnet_v6":null,"dns_port":53,"dns_server_ips":[]}')


def test_files_netavark_wrote_load(tmp_path: Path) -> None:
    """A network and a container Netavark set up (no name in its network file) reload here."""
    root = tmp_path / "firewall"
    (root / "networks").mkdir(parents=True)
    (root / "ports").mkdir()
    (root / "firewall-driver").write_text("nftables")
    (root / "networks" / NET_ID).write_text(
        '{"subnets":["10.89.7.0/24","fd10:89:7::/64"],"bridge_name":"nabr1","network_id":"'
        + NET_ID + '","network_hash_name":"F0B0EECB945D8","isolation":"Strict","dns_port":1053,'
        '"outbound_addr4":null}')
    (root / "ports" / f"{NET_ID}_{CID}").write_text(
        '{"container_id":"' + CID + '","network_id":"' + NET_ID + '","port_mappings":null,'
        '"network_name":"nanet1","network_hash_name":"F0B0EECB945D8",'
        '"container_ip_v4":"10.89.7.2","subnet_v4":"10.89.7.0/24","container_ip_v6":null,'
        '"subnet_v6":null,"dns_port":1053,"dns_server_ips":["10.89.7.1","fd10:89:7::1"]}')
    snap = StateStore(tmp_path).load()
    assert snap.networks == {NET_ID: net(isolate="strict", dns_port=1053)}
    assert snap.ports[f"{NET_ID}_{CID}"].mappings == ()


def test_old_layout_is_converted_once(tmp_path: Path) -> None:
    root = tmp_path / "firewall"
    (root / "networks").mkdir(parents=True)
    (root / "ports").mkdir()
    old_net = {"name": "nanet1", "id": NET_ID, "bridge": "nabr1", "subnets": ["10.89.7.0/24"],
               "gateways": ["10.89.7.1"], "isolate": "true", "dns_port": None}
    (root / "networks" / f"{NET_ID}.json").write_text(json.dumps(old_net))
    (root / "ports" / f"{NET_ID}_{CID}.json").write_text(json.dumps({
        "container_id": CID, "network": old_net, "container_v4": "10.89.7.2",
        "container_v6": None, "mappings": [pm().to_json()]}))
    (root / "installed.json").write_text('["nft-skeleton"]')
    store = StateStore(tmp_path)
    with store.locked():
        pass
    assert files(tmp_path) == [".burrow-ledger.json", "lock", f"networks/{NET_ID}",
                               f"ports/{NET_ID}_{CID}"]
    snap = store.load()
    assert snap.networks[NET_ID].isolate == "true"
    assert snap.ports[f"{NET_ID}_{CID}"].mappings == (pm(),)
    assert store.ledger("nftables") == ["nft-skeleton"]


def test_setup_teardown_files_and_one_exec_each(tmp_path: Path) -> None:
    rec = Recorder()
    fw = select("nftables", tmp_path, {}, runner=rec)
    fw.setup([net()], [pf(pm())])
    assert files(tmp_path) == [".burrow-ledger.json", "firewall-driver", "lock",
                               f"networks/{NET_ID}", f"ports/{NET_ID}_{CID}"]
    assert (tmp_path / "firewall/firewall-driver").read_text() == "nftables"
    assert len(rec.calls) == 1
    fw.teardown([], [pf(pm())])  # container gone, network stays
    assert files(tmp_path) == [".burrow-ledger.json", "firewall-driver", "lock",
                               f"networks/{NET_ID}"]
    fw.setup([net()], [pf(pm())])
    fw.teardown([net()], [pf(pm())])  # the last container: its network goes too
    # The table's empty base chains stay (as netavark's chains do); the ledger says so.
    assert files(tmp_path) == [".burrow-ledger.json", "firewall-driver", "lock"]
    # setup, teardown (list + nothing found in the recorder's empty table), setup, teardown
    assert ['"list"' in stdin for _, stdin in rec.calls] == [False, True, False, True]


def test_failed_apply_keeps_state_and_names_the_backend(tmp_path: Path) -> None:
    fw = select("nftables", tmp_path, {}, runner=Recorder())
    fw.setup([net()], [])
    before = {p: (tmp_path / "firewall" / p).read_text() for p in files(tmp_path)}
    bad = select("nftables", tmp_path, {}, runner=Recorder(rc=1))
    with pytest.raises(BurrowError) as err:
        bad.setup([net(name="other", bridge="br2", nid="22222222")], [pf(pm())])
    assert str(err.value) == ("firewall (nftables): apply batch: Error: Could not process rule: "
                              "No such file or directory")
    assert {p: (tmp_path / "firewall" / p).read_text() for p in files(tmp_path)} == before


def test_invalid_intent_fails_before_any_exec_or_write(tmp_path: Path) -> None:
    rec = Recorder()
    fw = select("iptables", tmp_path, {}, runner=rec)
    with pytest.raises(BurrowError, match=r'^firewall \(iptables\): invalid host ip "nope"'):
        fw.setup([net()], [pf(pm(host_ip="nope"))])
    assert rec.calls == [] and not (tmp_path / "firewall/networks").exists()


def test_reload_reapplies_persisted_state(tmp_path: Path) -> None:
    rec = Recorder()
    select("nftables", tmp_path, {}, runner=rec).setup([net()], [pf(pm())])
    select("nftables", tmp_path, {}, runner=rec).reload()
    # Reload lists the table (the recorder's is empty: a flushed firewall) and adds it all back.
    assert '"list"' in rec.calls[1][1]
    def rule_cmds(stdin: str) -> list[str]:
        return sorted(json.dumps(c) for c in json.loads(stdin)["nftables"]
                      if "rule" in c.get("add", c.get("insert", {})))

    assert rule_cmds(rec.calls[2][1]) == rule_cmds(rec.calls[0][1])


def test_parallel_setups_lose_nothing(tmp_path: Path) -> None:
    rec = Recorder()
    ports = [pf(pm(host_port=10000 + i)) for i in range(12)]
    ports = [type(p)(f"{CID[:60]}{i:04d}", p.network, p.container_v4, p.container_v6, p.mappings)
             for i, p in enumerate(ports)]
    threads = [threading.Thread(target=select("nftables", tmp_path, {}, runner=rec).setup,
                                args=([net()], [p])) for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(StateStore(tmp_path).load().ports) == 12
    assert len(rec.calls) == 12
    # The network's rules went in once; each container's own rules once each.
    assert sum(c[1].count('"create"') for c in rec.calls) == 3
    assert sum(c[1].count('"NETAVARK-HOSTPORT-DNAT","expr"') for c in rec.calls) == 24


def test_select_precedence_and_errors(tmp_path: Path) -> None:
    rec = Recorder()
    assert select(None, tmp_path, {}, runner=rec).name == "nftables"
    assert select(None, tmp_path, {"NETAVARK_FW": "iptables"}, runner=rec).name == "iptables"
    assert select("nftables", tmp_path, {"NETAVARK_FW": "iptables"}, runner=rec).name == "nftables"
    assert isinstance(select("none", tmp_path, {}), NoFirewall)
    assert select("firewalld", tmp_path, {}).name == "firewalld"
    with pytest.raises(BurrowError, match="unknown firewall driver 'ufw': valid choices "
                       "are nftables, iptables, firewalld, none"):
        select("ufw", tmp_path, {})


def test_select_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BurrowError, match=r"firewall \(nftables\): nft is not installed"):
        select("nftables", tmp_path, {})


def test_none_does_nothing(tmp_path: Path) -> None:
    fw = NoFirewall()
    fw.setup([net()], [pf(pm())])
    fw.teardown([net()], [pf(pm())])
    fw.reload()
    assert not (tmp_path / "firewall").exists()


def test_isolation_is_pinned_while_the_bridge_is_up(tmp_path: Path) -> None:
    """A later container can't change a running network's isolation; a new bridge can."""
    fw = select("nftables", tmp_path, {}, runner=Recorder())
    fw.setup([net()], [], fresh=["nabr1"])
    store = StateStore(tmp_path)
    assert store.pin([net(isolate="strict")], []) == [net()]
    assert store.pin([net(isolate="strict")], ["nabr1"]) == [net(isolate="strict")]
    fw.setup([net(isolate="strict")], [], fresh=["nabr1"])  # the bridge was made again
    assert json.loads((tmp_path / f"firewall/networks/{NET_ID}").read_text())["isolation"] == (
        "Strict")


def test_port_files_of_two_networks_never_share_a_name(tmp_path: Path) -> None:
    a = pf(pm(), network=net(nid="a_b"))
    a = type(a)("c", net(nid="a_b"), a.container_v4, None, a.mappings)
    b = type(a)("b_c", net(nid="a", name="other", bridge="br2"), a.container_v4, None, a.mappings)
    assert port_key(a) != port_key(b)  # "a_b" + "c" vs "a" + "b_c"
    store = StateStore(tmp_path)
    store.add([a.network, b.network], [a, b], "nftables")
    snap = store.load()
    assert {p.network.id for p in snap.ports.values()} == {"a_b", "a"}
