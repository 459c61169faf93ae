"""A container set up under one firewall driver and torn down under another leaves no rules in
either (netns/firewall/previous.py).

NETAVARK_FW can change between a container's setup and its teardown (an older burrow used
nftables under Podman; `burrow podman enable` now pins iptables for netavark < 1.9). Teardown
used only the driver in effect, so the first driver's DNAT and network rules stayed for good.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import network, options, port, run_in_process
from tests.nsutil import Netns, have, unique

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    not (have("nft") and have("iptables-restore") and have("iptables-save")),
    reason="environment: nft or iptables-restore/iptables-save is not installed")]

SUBNET, GW = "10.98.0.0/24", "10.98.0.1"


def _run(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any],
         driver: str) -> tuple[int, str]:
    return run_in_process(config, host, command, ctr, opts, env_driver=driver)


def _ok(*args: Any) -> str:
    code, text = _run(*args)
    assert code == 0, text
    return text


def _rules(host: Netns) -> dict[str, str]:
    return {"nft": host.run(["nft", "list", "ruleset"]).stdout,
            "iptables": host.run(["iptables-save"]).stdout}


def _naming(rules: dict[str, str], *needles: str) -> dict[str, list[str]]:
    """Each tool's rule lines that name any of `needles`."""
    return {tool: [ln for ln in text.splitlines() if any(n in ln for n in needles)]
            for tool, text in rules.items()}


@pytest.mark.parametrize(("before", "after"), [("nftables", "iptables"), ("iptables", "nftables")])
def test_teardown_under_another_driver_leaves_neither_tools_rules(
    before: str, after: str, host_ns: Netns, netns_factory: Callable[[], Netns],
    tmp_path: Path
) -> None:
    br = unique("fd")
    net = network(br, br, [(SUBNET, GW)])
    ctrs = {i: netns_factory() for i in (2, 3)}
    opts = {i: options(f"c{i}", [(net, {"interface_name": "eth0",
                                        "static_ips": [f"10.98.0.{i}"]})], [port(18100 + i, 80)])
            for i in ctrs}
    for i in ctrs:
        _ok(tmp_path, host_ns, "setup", ctrs[i], opts[i], before)
    seen = _naming(_rules(host_ns), "10.98.0.2", "18102")
    assert seen["nft" if before == "nftables" else "iptables"], seen  # the check can see them
    # The driver changes; c2 leaves a network that stays (c3): its port rules go from both.
    text = _ok(tmp_path, host_ns, "teardown", ctrs[2], opts[2], after)
    # Said once, naming both drivers.
    assert text.count(f"still has {before} rules (from before the switch to {after})") == 1, text
    assert _naming(_rules(host_ns), "10.98.0.2", "18102") == {"nft": [], "iptables": []}
    assert _naming(_rules(host_ns), "10.98.0.3", "18103")[
        "nft" if before == "nftables" else "iptables"]  # c3's stay
    # The last one leaves: the network's rules (masquerade, forward) go from both as well.
    _ok(tmp_path, host_ns, "teardown", ctrs[3], opts[3], after)
    assert _naming(_rules(host_ns), "10.98.0.", "18103") == {"nft": [], "iptables": []}
    # A teardown again: only the interface is reported gone (as netavark), no firewall error.
    code, text = _run(tmp_path, host_ns, "teardown", ctrs[3], opts[3], after)
    assert "does not exist in the container namespace" in text and "firewall" not in text, text
    assert _naming(_rules(host_ns), "10.98.0.", "18103") == {"nft": [], "iptables": []}


def test_a_network_set_up_under_both_drivers_is_left_clean(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """Containers of one network from before and after the change, torn down under the new
    driver in any order: no rules of either tool stay."""
    br = unique("fd")
    net = network(br, br, [(SUBNET, GW)])
    ctrs = {i: netns_factory() for i in (2, 3, 4)}
    opts = {i: options(f"c{i}", [(net, {"interface_name": "eth0",
                                        "static_ips": [f"10.98.0.{i}"]})], [port(18100 + i, 80)])
            for i in ctrs}
    _ok(tmp_path, host_ns, "setup", ctrs[2], opts[2], "nftables")
    _ok(tmp_path, host_ns, "setup", ctrs[3], opts[3], "iptables")
    _ok(tmp_path, host_ns, "setup", ctrs[4], opts[4], "iptables")
    _ok(tmp_path, host_ns, "teardown", ctrs[3], opts[3], "iptables")
    assert _naming(_rules(host_ns), "10.98.0.3", "18103") == {"nft": [], "iptables": []}
    _ok(tmp_path, host_ns, "teardown", ctrs[2], opts[2], "iptables")
    assert _naming(_rules(host_ns), "10.98.0.2", "18102") == {"nft": [], "iptables": []}
    _ok(tmp_path, host_ns, "teardown", ctrs[4], opts[4], "iptables")
    assert _naming(_rules(host_ns), "10.98.0.", "1810") == {"nft": [], "iptables": []}
