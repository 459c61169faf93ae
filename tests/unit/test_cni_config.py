"""burrow-cni's pure parts: env/CNI_ARGS/config parsing, the engine request, result rendering, IPAM picks."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from netns.cni import config as C
from netns.cni import hostlocal, result, translate
from netns.cni.errors import CniError
from netns.cni.plugin import run
from netns.schema import NetAddress, NetInterface, StatusBlock

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/1/ns/net",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}  # fmt: skip


def conf(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": "1.0.0", "name": "n1", "type": "burrow-cni",
                           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.5.0.0/24"}]]}}  # fmt: skip
    out.update(kw)
    return out


def test_env_and_args() -> None:
    env = C.parse_env({**ENV, "CNI_ARGS": "IgnoreUnknown=1;IP=10.5.0.9;K8S_POD_NAME=web;X=y"})
    assert env.args == {"IgnoreUnknown": "1", "IP": "10.5.0.9", "K8S_POD_NAME": "web"}
    assert C.container_name(env) == "web"
    with pytest.raises(CniError) as e:
        C.parse_env({**ENV, "CNI_ARGS": "X=y"})
    assert e.value.code == 4
    for bad in ({**ENV, "CNI_CONTAINERID": "-x"}, {**ENV, "CNI_IFNAME": "a/b"}, {**ENV, "CNI_COMMAND": "NOPE"}):
        with pytest.raises(CniError) as e:
            C.parse_env(bad)
        assert e.value.code == 4
    assert C.parse_env({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).netns == ""


def test_conf_defaults_and_network() -> None:
    c = C.parse_conf(conf(ipam={"subnet": "10.5.0.0/24", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.0.2.0/24"}]}))
    rs = c.range_sets[0][0]
    assert (str(rs.start), str(rs.end), str(rs.gateway)) == ("10.5.0.1", "10.5.0.254", "10.5.0.1")
    assert c.bridge == "cni0" and translate.default_gateways(c) and [str(r.dst) for r in c.routes] == ["192.0.2.0/24"]
    net = translate.network(c)
    assert net.subnets[0].gateway == ipaddress.ip_address("10.5.0.1")
    assert net.routes is not None and str(net.routes[0].gateway) == "10.5.0.1"
    assert "no_default_route" not in (net.options or {})
    assert translate.network(C.parse_conf(conf())).options == {"isolate": "false", "no_default_route": "true"}


@pytest.mark.parametrize(("kw", "code"), [
    ({"cniVersion": "0.2.0"}, 1),
    ({"ipam": {"type": "static"}}, 2),
    ({"ipMasq": False}, 2),
    ({"ipam": {"ranges": [[{"subnet": "10.5.0.0/24"}, {"subnet": "10.6.0.0/24"}]]}}, 2),
    ({"ipam": {"ranges": [[{"subnet": "10.5.0.0/24"}], [{"subnet": "10.5.0.0/25"}]]}}, 7),
    ({"ipam": {"ranges": [[{"subnet": "10.5.0.0/24", "rangeStart": "10.6.0.1"}]]}}, 7),
    ({"bridge": "x" * 16}, 7),
    ({"mtu": "1500"}, 7),
])  # fmt: skip
def test_conf_refusals(kw: dict[str, Any], code: int) -> None:
    with pytest.raises(CniError) as e:
        C.parse_conf(conf(**kw))
    assert e.value.code == code


def test_runtime_config() -> None:
    c = C.parse_conf(conf(runtimeConfig={
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": "127.0.0.1"}],
        "ips": ["10.5.0.7/24"], "mac": "02:00:00:00:00:01", "aliases": {"n1": ["db"], "other": ["x"]}}))  # fmt: skip
    env = C.parse_env({**ENV, "CNI_ARGS": "IP=10.5.0.7,10.5.0.8;ALIASES=cache"})
    assert [str(i) for i in C.requested_ips(env, c)] == ["10.5.0.7", "10.5.0.8"]
    assert C.requested_mac(env, c) == "02:00:00:00:00:01"
    assert C.aliases(env, c) == ("cache", "db")
    (pm,) = C.port_mappings(c)
    assert (pm.host_ip, pm.host_port, pm.container_port, pm.protocol) == ("127.0.0.1", 8080, 80, "tcp")
    bad = C.parse_conf(conf(runtimeConfig={"portMappings": [{"hostPort": 0, "containerPort": 80}]}))
    with pytest.raises(CniError):
        C.port_mappings(bad)


def test_render_and_convert() -> None:
    c = C.parse_conf(conf(cniVersion="0.4.0", ipam={"subnet": "10.5.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}))
    gw = ipaddress.ip_address("10.5.0.1")
    block = StatusBlock((), (), {"eth0": NetInterface("aa:bb:cc:dd:ee:ff", (NetAddress(gw, ipaddress.ip_interface("10.5.0.2/24")),))})
    out = result.render(c, {"n1": block}, "eth0", "/ns")
    assert out["ips"] == [{"address": "10.5.0.2/24", "interface": 0, "gateway": "10.5.0.1", "version": "4"}]
    # The configured route as configured (the gateway implied), as the reference bridge.
    assert out["routes"] == [{"dst": "0.0.0.0/0"}]
    dgw = C.parse_conf(conf(cniVersion="0.4.0", isDefaultGateway=True, ipam={"subnet": "10.5.0.0/24"}))
    assert result.render(dgw, {"n1": block}, "eth0", "/ns")["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.5.0.1"}]
    assert "version" not in result.convert(out, "1.0.0")["ips"][0]


def test_pick_wraps_and_skips_gateway() -> None:
    rs = (C.parse_range({"subnet": "10.5.0.0/29"}),)  # usable .1-.6, gateway .1
    ip = ipaddress.ip_address
    assert hostlocal.pick(rs, None, set()) == ip("10.5.0.2")
    assert hostlocal.pick(rs, ip("10.5.0.6"), set()) == ip("10.5.0.2")  # wraps
    assert hostlocal.pick(rs, ip("10.5.0.3"), {ip("10.5.0.4")}) == ip("10.5.0.5")
    assert hostlocal.pick(rs, None, {ip(f"10.5.0.{i}") for i in range(2, 7)}) is None
    big = (C.parse_range({"subnet": "fd00::/64"}),)
    assert hostlocal.pick(big, ip("fd00::ffff"), set()) == ip("fd00::1:0")


def test_allocate_keeps_and_releases(tmp_path: Path) -> None:
    store = hostlocal.Store(str(tmp_path), "n1")
    sets = (C.parse_range_sets({"ranges": [[{"subnet": "10.5.0.0/24"}], [{"subnet": "fd00::/64"}]]}))
    with store.locked():
        ips, new = hostlocal.allocate(store, sets, ("c1", "eth0"), ())
        assert [str(i) for i in ips] == ["10.5.0.2", "fd00::2"] and new == ips
        again, new2 = hostlocal.allocate(store, sets, ("c1", "eth0"), ())
        assert again == ips and new2 == ()  # a repeated ADD keeps, and reserves nothing new
        with pytest.raises(CniError):
            hostlocal.allocate(store, sets, ("c2", "eth0"), (ipaddress.ip_address("fd00::2"),))
        assert set(store.allocations().values()) == {("c1", "eth0")}  # c2's v4 pick given back


def test_run_never_raises_and_speaks_cni_errors() -> None:
    out, code = run({}, b"")
    assert code == 1 and '"code": 4' in out
    out, code = run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert code == 0 and '"cniVersion": "0.4.0"' in out
    out, code = run(ENV, b"\xff\xfe")
    assert code == 1 and '"code": 6' in out
    out, code = run(ENV, b"[" * 100000)
    assert code == 1 and '"code": 6' in out


def test_thin_client_is_light_and_agrees_with_the_config() -> None:
    """burrow-cni's exec'd part loads no engine, schema or dataclasses: only the thin client."""
    import os
    import subprocess
    import sys

    from netns.cni import client

    code = ("import sys; before = set(sys.modules); import netns.cni.client; "
            "print(' '.join(sorted(set(sys.modules) - before)))")  # fmt: skip
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env, check=True)
    added = set(res.stdout.split())
    assert added <= {"netns", "netns.client", "netns.statefiles", "netns.cni", "netns.cni.client", "__future__"}, added
    assert client.DEFAULT_STATE_DIR == C.DEFAULT_STATE_DIR
    assert client.state_dir(b'{"stateDir": "/run/x"}') == "/run/x"
    assert client.state_dir(b"{}") == C.DEFAULT_STATE_DIR
    assert client.state_dir(b'{"stateDir": "relative"}') is None
    assert client.state_dir(b"nope") is None


@pytest.mark.parametrize("text", [
    b'{"stateDir": "/run/x", "ipam": {"stateDir": "/nested"}}', b' \n{"a": [1, 2.5e3, -0, true, null]}\t',
    b'{"stateDir": "/r\\u00e9\\n"}', b'{"a": NaN, "b": -Infinity}', b'{"a": 1} x', b'{"a": 1}{}', b'{"a": "\\q"}',
    b'{"a": 01}', b"[1]", b"", b"\xff{}", b"{" * 5000, b'{"a": "\x01"}', b'\x0c{}',
])  # fmt: skip
def test_thin_client_reads_the_config_as_json_loads_without_importing_json(text: bytes) -> None:
    """The thin client decodes stdin with the C scanner alone (importing json costs it more
    than the rest of its work); whatever it accepts, json.loads gives the same, and it
    accepts whatever json.loads does (bar nesting past the recursion limit)."""
    import json

    from netns.cni import client

    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        expected = None
    got = client.load_object(text)
    assert json.dumps(got) == json.dumps(expected)


def test_thin_client_finds_the_state_dir_without_importing_json() -> None:
    import subprocess
    import sys

    code = ("import sys; import netns.cni.client as c; c.state_dir(sys.stdin.buffer.read()); "
            "print(c.state_dir(b'{}'), 'json' in sys.modules, 're' in sys.modules)")
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-S", "-c", code], input=b'{"stateDir": "/run/x"}',
                         capture_output=True, cwd=repo, check=True)
    assert res.stdout.split() == [b"/run/burrow-cni", b"False", b"False"]


def test_default_routes_only_for_the_families_asked() -> None:
    """ipam routes with the IPv6 default alone: IPv4 gets no default route (as the reference
    bridge + host-local); a default with its own gw goes via that gw. Found by the CNI
    differential: burrow gave every family a default route once any family had one."""
    ranges = [[{"subnet": "10.5.0.0/24"}], [{"subnet": "fd05::/64"}]]
    c = C.parse_conf(conf(ipam={"ranges": ranges, "routes": [{"dst": "::/0"}, {"dst": "192.0.2.0/24"}]}))
    net = translate.network(c)
    assert net.options["no_default_route"] == "true"
    assert [(str(r.destination), str(r.gateway)) for r in net.routes or ()] == [
        ("192.0.2.0/24", "10.5.0.1"), ("::/0", "fd05::1")]
    via = C.parse_conf(conf(ipam={"ranges": ranges[:1], "routes": [{"dst": "0.0.0.0/0", "gw": "10.5.0.9"}]}))
    assert [(str(r.destination), str(r.gateway)) for r in translate.network(via).routes or ()] == [
        ("0.0.0.0/0", "10.5.0.9")]
    both = C.parse_conf(conf(isDefaultGateway=True, ipam={"ranges": ranges}))
    assert "no_default_route" not in translate.network(both).options and not translate.network(both).routes


def test_an_internal_network_gets_no_default_route() -> None:
    ranges = [[{"subnet": "10.5.0.0/24"}], [{"subnet": "fd05::/64"}]]
    c = C.parse_conf(conf(internal=True, ipam={"ranges": ranges, "routes": [{"dst": "::/0"}]}))
    assert translate.default_gateways(c) == {}
    assert not translate.network(c).routes
