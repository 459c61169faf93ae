"""burrow-cni's stdin config and environment, hostile values (pure parsing)."""

from __future__ import annotations

from typing import Any

import pytest

from netns.cni import config as C
from netns.cni.errors import CniError


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
