"""MLD reports stay off the other container ports of a bridge burrow made (netns/mldquiet.py).

A new container's kernel sends 4 MLDv2 reports when its interface comes up; with no querier
the bridge floods each to every port, so N containers each take 4 copies per setup. The
`bridge burrow_quiet` table drops them between two container ports of a bridge burrow made
(device group QUIET_GROUP): the bridge itself still gets them, and ARP/ND and ping work as
before. The table goes with the last such bridge; `--firewall-driver none` makes none.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netns import mldquiet
from netns.firewall.runner import ExecResult
from tests.engine_util import network, options, ping, run_in_process, static_net
from tests.frames import ICMP6, MLD2_REPORT, collect, drain, sniffer
from tests.nsutil import Netns, have, unique

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not have("nft"), reason="environment: nft is not installed")]

MLD = ICMP6[MLD2_REPORT]
TABLE = ["nft", "list", "table", mldquiet.FAMILY, mldquiet.TABLE]


def _ok(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any],
        driver: str | None = None) -> None:
    code, text = run_in_process(config, host, command, ctr, opts, env_driver=driver)
    assert code == 0, text


def _link(ns: Netns, dev: str) -> dict[str, Any]:
    return dict(json.loads(ns.run(["ip", "-j", "-d", "link", "show", dev]).stdout)[0])


def _has_table(host: Netns) -> bool:
    return host.run(TABLE, check=False).returncode == 0


def _net(dual: bool, third: int = 95) -> tuple[dict[str, Any], Callable[[int], dict[str, Any]]]:
    return static_net("kq", third, dual)


@pytest.mark.parametrize("filtered", [True, False], ids=["filtered", "table-deleted"])
@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
def test_mld_reports_reach_the_bridge_but_not_the_other_containers(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, dual: bool,
    filtered: bool,
) -> None:
    """`table-deleted` is the control: without the table the reports reach the other port."""
    net, opts = _net(dual)
    br = net["network_interface"]
    first = netns_factory()
    _ok(tmp_path, host_ns, "setup", first, opts(2))
    assert _has_table(host_ns)
    if not filtered:
        host_ns.run(["nft", "delete", "table", mldquiet.FAMILY, mldquiet.TABLE])
    ctr_sock, br_sock = sniffer(first), sniffer(host_ns, br)
    with ctr_sock, br_sock:
        drain(ctr_sock)
        drain(br_sock, quiet=0.1)
        new = netns_factory()
        _ok(tmp_path, host_ns, "setup", new, opts(3))
        on_port = collect(ctr_sock, 3.0)  # a report and its repeat (within a second)
        on_bridge = collect(br_sock, 0.5)  # what queued meanwhile
    joined = _link(new, "eth0")["address"]
    assert bool([f for f in on_port if f.src == joined and f.kind == MLD]) is not filtered, on_port
    assert [f for f in on_bridge if f.src == joined and f.kind == MLD], on_bridge
    # The bridge's snooping learned the new container's solicited-node group(s).
    assert "ff02::1:ff" in host_ns.run(["bridge", "mdb", "show", "dev", br]).stdout
    # The bridge and the container ends are in the group; ND and ARP still flood.
    assert _link(host_ns, br).get("group") == str(mldquiet.QUIET_GROUP)
    ports = json.loads(host_ns.run(["ip", "-j", "-d", "link", "show", "master", br]).stdout)
    assert {p.get("group") for p in ports} == {str(mldquiet.QUIET_GROUP)}, ports
    for addr in ["10.95.0.2", "10.95.0.1"] + (["fd95::2", "fd95::1"] if dual else []):
        assert ping(new, addr), addr
    assert ping(first, "10.95.0.3")
    if dual:
        assert ping(first, "fd95::3")


@pytest.mark.parametrize("driver", ["nftables", "iptables"])
def test_the_filter_goes_with_the_last_bridge_burrow_made(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, driver: str
) -> None:
    """Two networks: the table stays while either bridge is there, and the teardown that
    deletes the last one deletes it (with the nftables and the iptables driver alike)."""
    if driver == "iptables" and not have("iptables-restore"):
        pytest.skip("environment: iptables is not installed")
    (_, opts_a), (_, opts_b) = _net(False, 93), _net(False, 94)
    a, b = netns_factory(), netns_factory()
    _ok(tmp_path, host_ns, "setup", a, opts_a(2), driver)
    _ok(tmp_path, host_ns, "setup", b, opts_b(2), driver)
    assert _has_table(host_ns)
    _ok(tmp_path, host_ns, "teardown", a, opts_a(2), driver)
    assert _has_table(host_ns)
    _ok(tmp_path, host_ns, "teardown", b, opts_b(2), driver)
    assert not _has_table(host_ns), host_ns.run(["nft", "list", "ruleset"]).stdout


def test_a_bridge_made_by_hand_and_no_firewall_get_no_filter(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """An unmanaged bridge (someone else's: its ports may lead to a LAN's multicast router)
    gets neither the group nor the table; `--firewall-driver none` makes no table either."""
    br = unique("kq")
    host_ns.run(["ip", "link", "add", br, "type", "bridge"])
    host_ns.run(["ip", "link", "set", br, "up"])
    net = network(br, br, [("10.92.0.0/24", "10.92.0.1")], options={"mode": "unmanaged"})
    ctr = netns_factory()
    _ok(tmp_path, host_ns, "setup", ctr, options("c2", [(net, {
        "interface_name": "eth0", "static_ips": ["10.92.0.2"]})]))
    assert not _has_table(host_ns)
    ports = json.loads(host_ns.run(["ip", "-j", "-d", "link", "show", "master", br]).stdout)
    assert {p.get("group") for p in ports} == {"default"}, ports
    _, opts = _net(False, 91)
    other = netns_factory()
    _ok(tmp_path, host_ns, "setup", other, opts(2), "none")
    assert not _has_table(host_ns)


def test_two_config_dirs_one_deleting_its_last_bridge_as_the_other_makes_its_first(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two engines of different config dirs (own locks, own state) share the host netns's one
    table. Engine A tears down its last bridge, sees no bridge of the group left, and is held
    just before it deletes the table; meanwhile engine B makes its first bridge (the table is
    still there, so B's create changes nothing). Then A deletes. The table must still be there
    for B's bridge (before the fix A deleted it and B's ports flooded reports until the next
    bridge was made), and goes once B's bridge goes too."""
    (_, opts_a), (net_b, opts_b) = _net(False, 89), _net(False, 90)
    real = mldquiet._runner()
    assert real is not None
    at_delete, go = threading.Event(), threading.Event()

    def held(argv: list[str], stdin: str) -> ExecResult:
        if "delete" in json.loads(stdin)["nftables"][0] and not at_delete.is_set():
            at_delete.set()
            assert go.wait(60), "engine B never finished"
        return real(argv, stdin)

    monkeypatch.setattr(mldquiet, "_runner", lambda: held)
    a, b = netns_factory(), netns_factory()
    _ok(tmp_path / "a", host_ns, "setup", a, opts_a(2))
    result: list[tuple[int, str]] = []
    teardown_a = threading.Thread(target=lambda: result.append(
        run_in_process(tmp_path / "a", host_ns, "teardown", a, opts_a(2))))
    teardown_a.start()
    try:
        assert at_delete.wait(60), "engine A never came to delete the table"
        _ok(tmp_path / "b", host_ns, "setup", b, opts_b(2))
    finally:
        go.set()
        teardown_a.join(60)
    assert result and result[0][0] == 0, result
    assert _link(host_ns, net_b["network_interface"]).get("group") == str(mldquiet.QUIET_GROUP)
    assert _has_table(host_ns), "B's bridge was left without the MLD filter"
    _ok(tmp_path / "b", host_ns, "teardown", b, opts_b(2))
    assert not _has_table(host_ns), host_ns.run(["nft", "list", "ruleset"]).stdout
