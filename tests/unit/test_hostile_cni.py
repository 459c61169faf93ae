"""burrow-cni's stdin config and environment, hostile values (pure parsing)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netns.cni import config as C
from netns.cni.errors import CniError
from netns.cni.plugin import run


def conf(subnet: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "n1", "type": "burrow-cni",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]}}


@pytest.mark.parametrize(("subnet", "why"), [
    ("::/0", "unspecified address"),
    ("0.0.0.0/1", "unspecified address"),
    ("127.0.0.0/24", "loopback range"),
    ("224.1.0.0/24", "multicast range"),
    ("::ffff:10.5.0.0/120", "IPv4-mapped"),
])  # fmt: skip
def test_a_range_no_bridge_can_use_is_an_invalid_config(subnet: str, why: str) -> None:
    """The same subnets `burrow-netavark` refuses (tests/integration/test_hostile_subnets.py):
    before, ::/0 put a default route of the host on the bridge."""
    with pytest.raises(CniError) as e:
        C.parse_conf(conf(subnet))
    assert e.value.code == 7 and why in e.value.msg, e.value.msg


@pytest.mark.parametrize("prev", [
    {"interfaces": 1, "ips": []},
    {"interfaces": {"0": {"name": "eth0"}}, "ips": [{"address": "10.5.0.9/24", "interface": 0}]},
    {"interfaces": [], "ips": 7},
])  # fmt: skip
def test_check_with_a_prev_result_of_wrong_types_is_an_invalid_config(prev: dict[str, Any]) -> None:
    """Was code 100 "internal error: TypeError(...)" / KeyError(0)."""
    env = {"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/1/ns/net",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    out, code = run(env, json.dumps({**conf("10.5.0.0/24"), "prevResult": prev}).encode())
    reply = json.loads(out)
    assert code == 1 and reply["code"] == 7 and "prevResult." in reply["msg"], reply
