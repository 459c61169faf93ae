"""burrow-cni driven exactly as the CNI spec (1.0.0, 1.1 GC/STATUS, 0.4.0) says a runtime drives it.

Each test builds a throwaway "host" netns (where the plugin runs, as a runtime would run it on
the node) and container netns; the plugin is the installed `burrow-cni` executable, given the
spec's environment and the config on stdin. Nothing touches the machine's own network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cni_util import PLUGIN, CniWorld, cid
from tests.engine_util import request, start_server
from tests.nsutil import VENV_BIN, Netns

pytestmark = pytest.mark.root


@pytest.fixture
def world(netns_factory: Callable[[], Netns], tmp_path: Path) -> Iterator[CniWorld]:
    if not PLUGIN.exists():
        pytest.skip("environment: burrow-cni is not installed (run scripts/install)")
    yield CniWorld(netns_factory(), tmp_path)


def ports(host_port: int, ctr_port: int) -> dict[str, Any]:
    return {"portMappings": [{"hostPort": host_port, "containerPort": ctr_port, "protocol": "tcp"}]}


def address(result: dict[str, Any], version: int) -> str:
    return next(ip["address"] for ip in result["ips"] if (":" in ip["address"]) == (version == 6))


# -- VERSION, ADD, CHECK, DEL --------------------------------------------------------------


def test_version_lists_the_spec_versions(world: CniWorld) -> None:
    r = world.call("VERSION", {"cniVersion": "1.0.0"})
    assert r.code == 0
    assert r.json["cniVersion"] == "1.0.0"
    assert {"0.4.0", "1.0.0", "1.1.0"} <= set(r.json["supportedVersions"])


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0"])
def test_add_check_del_dual_stack(world: CniWorld, netns_factory: Callable[[], Netns], version: str) -> None:
    ctr = netns_factory()
    conf, c = world.conf(version), cid()
    res = world.add(ctr, conf, c)
    assert res["cniVersion"] == version
    # As the reference bridge plugin: the bridge, the veth's host end, then the container's.
    bridge, veth, eth0 = res["interfaces"]
    assert bridge == {"name": world.bridge, "mac": world.host.links()[1]["address"]}
    assert veth["name"].startswith("veth") and "sandbox" not in veth
    assert eth0 == {"name": "eth0", "mac": eth0["mac"], "sandbox": ctr.path}
    assert [ip["address"] for ip in res["ips"]] == ["10.77.0.2/24", "fd77::2/64"]
    assert [ip.get("gateway") for ip in res["ips"]] == ["10.77.0.1", "fd77::1"]
    assert all(ip["interface"] == 2 for ip in res["ips"])
    # 0.4.0 results carry the per-IP version; 1.0.0 dropped it.
    assert [ip.get("version") for ip in res["ips"]] == (["4", "6"] if version == "0.4.0" else [None, None])
    assert {"dst": "0.0.0.0/0"} in res["routes"]  # as configured (the gateway implied)
    assert set(ctr.addrs("eth0")) >= {"10.77.0.2/24", "fd77::2/64"}
    assert ctr.links()[-1]["address"] == eth0["mac"]
    assert "default via 10.77.0.1 dev eth0" in ctr.run(["ip", "route"]).stdout
    assert set(world.held()) == {"10.77.0.2", "fd77::2"}
    assert world.held()["10.77.0.2"] == f"{c}\r\neth0"  # host-local's own file format

    chk = world.call("CHECK", {**conf, "prevResult": res}, cid=c, netns=ctr.path)
    assert (chk.code, chk.stdout) == (0, "")

    world.delete(ctr, {**conf, "prevResult": res}, c)
    assert "eth0" not in ctr.link_names()
    assert world.held() == {}
    assert world.bridge not in world.host.link_names()  # last container gone: bridge too
    world.delete(ctr, conf, c)  # DEL is idempotent


def test_check_fails_when_the_address_is_gone(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    conf, c = world.conf(), cid()
    res = world.add(ctr, conf, c)
    ctr.run(["ip", "addr", "del", "10.77.0.2/24", "dev", "eth0"])
    chk = world.call("CHECK", {**conf, "prevResult": res}, cid=c, netns=ctr.path)
    assert chk.code != 0 and chk.json["code"] == 101 and "10.77.0.2/24" in chk.json["msg"]
    nochk = world.call("CHECK", conf, cid=c, netns=ctr.path)
    assert nochk.code != 0 and nochk.json["code"] == 7  # CHECK needs prevResult
    world.delete(ctr, conf, c)


def test_two_containers_reach_each_other_and_a_published_port(
    world: CniWorld, netns_factory: Callable[[], Netns]
) -> None:
    a, b = netns_factory(), netns_factory()
    conf = world.conf()
    ca, cb = cid(), cid()
    ra = world.add(a, world.conf(runtimeConfig=ports(18080, 8080)), ca)
    rb = world.add(b, conf, cb)
    ip_a, ip_b = address(ra, 4).split("/")[0], address(rb, 4).split("/")[0]
    assert ip_a != ip_b
    srv = start_server(a, 8080, reply="from-a")
    try:
        assert request(b, ip_a, 8080) == "from-a 8080"
        assert request(b, address(ra, 6).split("/")[0], 8080) == "from-a 8080"
        # The published port: from the host to its own address on the bridge (kernel DNAT).
        assert request(world.host, "10.77.0.1", 18080) == "from-a 8080"
        assert request(b, "10.77.0.1", 18080) == "from-a 8080"
        assert "18080" in world.ruleset()
    finally:
        srv.kill()
    world.delete(a, world.conf(runtimeConfig=ports(18080, 8080)), ca)
    assert "18080" not in world.ruleset()
    assert request(b, "10.77.0.1", 18080).startswith("FAILED")
    world.delete(b, conf, cb)
    assert world.held() == {}


# -- error cases -------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])
def test_missing_environment_is_code_4(world: CniWorld, netns_factory: Callable[[], Netns], missing: str) -> None:
    ctr = netns_factory()
    r = world.call("ADD", world.conf(), cid=cid(), netns=ctr.path, drop=(missing,))
    assert r.code != 0
    assert r.json["code"] == 4 and missing in r.json["msg"]
    assert "eth0" not in ctr.link_names() and world.held() == {}


@pytest.mark.parametrize(
    ("stdin", "code"),
    [
        ("this is not json", 6),
        ('["a list"]', 6),
        ({"cniVersion": "1.0.0", "name": "bn-x", "type": "burrow-cni"}, 7),  # no ipam ranges
        ({"cniVersion": "1.0.0", "name": "bad/name", "type": "burrow-cni", "ipam": {"subnet": "10.9.0.0/24"}}, 7),
        ({"cniVersion": "1.0.0", "name": "bn-x", "type": "burrow-cni", "ipam": {"type": "dhcp"}}, 2),
        ({"cniVersion": "1.0.0", "name": "bn-x", "type": "burrow-cni", "isGateway": False,
          "ipam": {"subnet": "10.9.0.0/24"}}, 2),
        ({"cniVersion": "9.9.9", "name": "bn-x", "type": "burrow-cni", "ipam": {"subnet": "10.9.0.0/24"}}, 1),
        ({"name": "bn-x", "type": "burrow-cni", "ipam": {"subnet": "10.9.0.0/24"}}, 7),  # no cniVersion
    ],
)
def test_bad_config_is_refused_with_the_spec_code(
    world: CniWorld, netns_factory: Callable[[], Netns], stdin: Any, code: int
) -> None:
    ctr = netns_factory()
    r = world.call("ADD", stdin, cid=cid(), netns=ctr.path)
    assert r.code != 0 and r.json["code"] == code, r.stdout
    assert r.json["msg"]
    assert "eth0" not in ctr.link_names()


def test_unknown_cni_args_need_ignore_unknown(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    r = world.call("ADD", world.conf(), cid=cid(), netns=ctr.path, args="FOO=bar")
    assert r.code != 0 and r.json["code"] == 4
    c = cid()
    world.add(ctr, world.conf(), c, args="IgnoreUnknown=1;FOO=bar")
    world.delete(ctr, world.conf(), c)


def test_add_twice_fails_and_keeps_the_first(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    a, b = netns_factory(), netns_factory()
    conf, c = world.conf(), cid()
    first = world.add(a, conf, c)
    again = world.call("ADD", conf, cid=c, netns=a.path)
    assert again.code != 0 and again.json["code"] >= 100
    # The failed ADD gave nothing back that the first one holds.
    assert set(world.held()) == {"10.77.0.2", "fd77::2"}
    assert set(a.addrs("eth0")) >= {"10.77.0.2/24"}
    other = world.add(b, conf, cid())
    assert address(other, 4) == "10.77.0.3/24"
    ok = world.call("CHECK", {**conf, "prevResult": first}, cid=c, netns=a.path)
    assert ok.code == 0, ok.stdout


def test_del_of_an_unknown_container_succeeds(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    world.delete(ctr, world.conf(), cid())
    world.delete(None, world.conf(), cid())  # and without CNI_NETNS


def test_del_when_the_netns_is_gone(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    conf = world.conf(runtimeConfig=ports(18081, 80))
    c = cid()
    world.add(ctr, conf, c)
    path = ctr.path
    ctr.close()
    r = world.call("DEL", conf, cid=c, netns=path)
    assert (r.code, r.stdout) == (0, ""), r.stderr
    assert world.held() == {}
    assert "18081" not in world.ruleset()


# -- IPAM: static addresses, persistence, MAC, several subnets --------------------------------


def test_static_ips_and_mac(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    a, b = netns_factory(), netns_factory()
    rc = {"ips": ["10.77.0.50/24", "fd77::50/64"], "mac": "02:42:ac:11:00:99"}
    ra = world.add(a, world.conf(runtimeConfig=rc), cid())
    assert [ip["address"] for ip in ra["ips"]] == ["10.77.0.50/24", "fd77::50/64"]
    assert ra["interfaces"][2]["mac"] == "02:42:ac:11:00:99"
    assert a.links()[-1]["address"] == "02:42:ac:11:00:99"
    rb = world.add(b, world.conf(), cid(), args="IgnoreUnknown=1;IP=10.77.0.60")
    assert address(rb, 4) == "10.77.0.60/24"
    taken = world.call("ADD", world.conf(), cid=cid(), netns=netns_factory().path, args="IP=10.77.0.60")
    assert taken.code != 0 and "already allocated" in taken.json["msg"]
    outside = world.call("ADD", world.conf(), cid=cid(), netns=netns_factory().path, args="IP=10.99.0.5")
    assert outside.code != 0 and outside.json["code"] == 7


def test_allocations_persist_across_calls_host_local_style(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    conf = world.conf(ranges=[[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.12"}]])
    ns = [netns_factory() for _ in range(4)]
    ids = [cid() for _ in ns]
    got = [address(world.add(n, conf, i), 4) for n, i in zip(ns[:3], ids[:3], strict=True)]
    assert got == ["10.77.0.10/24", "10.77.0.11/24", "10.77.0.12/24"]
    full = world.call("ADD", conf, cid=ids[3], netns=ns[3].path)
    assert full.code != 0 and "no IP addresses available" in full.json["msg"]
    assert world.call("STATUS", conf).json["code"] == 50
    world.delete(ns[1], conf, ids[1])
    assert world.call("STATUS", conf).code == 0
    # Each call is a new process: the next address comes from the files on disk.
    assert address(world.add(ns[3], conf, ids[3]), 4) == "10.77.0.11/24"
    assert (world.data_dir / world.name / "last_reserved_ip.0").read_text() == "10.77.0.11"


def test_several_subnets(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ranges = [[{"subnet": "10.77.0.0/24"}], [{"subnet": "10.78.0.0/24", "gateway": "10.78.0.254"}],
              [{"subnet": "fd77::/64"}]]  # fmt: skip
    a, b = netns_factory(), netns_factory()
    ra = world.add(a, world.conf(ranges=ranges), cid())
    rb = world.add(b, world.conf(ranges=ranges), cid())
    assert [ip["address"] for ip in ra["ips"]] == ["10.77.0.2/24", "10.78.0.1/24", "fd77::2/64"]
    assert [ip["gateway"] for ip in ra["ips"]] == ["10.77.0.1", "10.78.0.254", "fd77::1"]
    srv = start_server(b, 7070, reply="b")
    try:
        assert request(a, address(rb, 4).split("/")[0], 7070) == "b 7070"
        assert request(a, "10.78.0.2", 7070) == "b 7070"
    finally:
        srv.kill()


# -- chaining, DNS names, GC, STATUS, the warm engine ---------------------------------------


def test_chained_after_another_plugin_keeps_prev_result(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo"}],
            "ips": [{"address": "192.0.2.1/32", "interface": 0}], "dns": {"options": ["ndots:2"]}}  # fmt: skip
    res = world.add(ctr, world.conf(prevResult=prev, dns={"search": ["example.org"]}), cid())
    assert res["interfaces"][0] == {"name": "lo"}
    assert [i["name"] for i in res["interfaces"][1:]] == [world.bridge, "veth0", "eth0"]
    assert res["ips"][0] == {"address": "192.0.2.1/32", "interface": 0}
    assert {ip["interface"] for ip in res["ips"][1:]} == {3}
    assert res["dns"] == {"options": ["ndots:2"], "search": ["example.org"]}


def test_dns_names_through_burrow_dns(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    a, b = netns_factory(), netns_factory()
    conf = world.conf(dnsNames=True, dnsBinary=str(VENV_BIN / "burrow-dns"),
                      runtimeConfig={"aliases": {world.name: ["web"]}})  # fmt: skip
    ra = world.add(a, conf, cid(), args="IgnoreUnknown=1;K8S_POD_NAME=alpha")
    rb = world.add(b, world.conf(dnsNames=True, dnsBinary=str(VENV_BIN / "burrow-dns")), cid(),
                   args="K8S_POD_NAME=beta")  # fmt: skip
    assert rb["dns"] == {"nameservers": ["10.77.0.1", "fd77::1"], "search": ["dns.podman"]}
    ip_a = address(ra, 4).split("/")[0]
    for name in ("alpha", "web", "alpha.dns.podman"):
        out = b.run(["dig", "+short", "+time=2", "+tries=3", "@10.77.0.1", name, "A"], check=False).stdout
        assert out.split() == [ip_a], (name, out)


def test_gc_removes_what_is_not_valid(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    a, b = netns_factory(), netns_factory()
    ca, cb = cid(), cid()
    world.add(a, world.conf(), ca)
    world.add(b, world.conf(runtimeConfig=ports(18082, 80)), cb)
    assert "18082" in world.ruleset()
    conf = world.conf("1.1.0", **{"cni.dev/valid-attachments": [{"containerID": ca, "ifname": "eth0"}]})
    r = world.call("GC", conf)
    assert (r.code, r.stdout) == (0, ""), r.stderr
    assert set(world.held()) == {"10.77.0.2", "fd77::2"}
    assert all(v.startswith(ca) for v in world.held().values())
    assert "18082" not in world.ruleset()
    assert world.bridge in world.host.link_names()  # a still uses it


def test_status(world: CniWorld) -> None:
    r = world.call("STATUS", world.conf("1.1.0"))
    assert (r.code, r.stdout) == (0, "")


def test_warm_engine_serves_add_and_del(world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    world.env.update(BURROW_ENGINE="on", BURROW_ENGINE_STATS="1")
    a, b = netns_factory(), netns_factory()
    conf = world.conf(runtimeConfig=ports(18083, 8080))
    ca, cb = cid(), cid()
    first = world.call("ADD", conf, cid=ca, netns=a.path)
    assert first.code == 0 and "served-by=in-process" in first.stderr  # and it starts an engine
    sock = world.state_dir / "burrow-engine.sock"
    deadline = time.monotonic() + 20
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock.exists()
    second = world.call("ADD", world.conf(), cid=cb, netns=b.path)
    assert second.code == 0 and "served-by=engine" in second.stderr, second.stderr
    assert address(second.json, 4) == "10.77.0.3/24"
    srv = start_server(a, 8080, reply="warm")
    try:
        assert request(b, "10.77.0.1", 18083) == "warm 8080"
    finally:
        srv.kill()
    gone = world.call("DEL", conf, cid=ca, netns=a.path)
    assert gone.code == 0 and "served-by=engine" in gone.stderr
    world.delete(b, world.conf(), cb)
    assert world.held() == {}
    assert "18083" not in world.ruleset()
    assert world.bridge not in world.host.link_names()
