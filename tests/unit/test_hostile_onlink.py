"""A kept client address inside the sandbox's own subnets (Target.onlink): the sandbox answers
it over its link, never back through `via`, so such a client is not dialled from `via`
(tests/integration/test_hostile_client_address.py has the real traffic)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from netns.errors import BurrowError
from rootless.ports import clientaddr, messages
from rootless.ports.target import Target

NET = ipaddress.ip_network("10.88.0.0/16")


def _target(**kw: Any) -> Target:
    return Target("web", "/run/ns/web", ipaddress.IPv4Address("10.88.0.2"), None,
                  "/proc/1/ns/net", inside=True, **kw)


def test_a_client_in_the_sandboxs_subnet_is_not_dialled_via() -> None:
    avail = clientaddr.Availability()
    t = _target(onlink=(NET,))
    udp = t.plans("::ffff:10.88.0.7", 4000, True, True, avail)
    assert [p.mode for p in udp] == [clientaddr.PLAIN]
    tcp = t.plans("10.88.0.7", 4000, True, True, avail, tcp=True)  # inside: still kept
    assert tcp[0].mode == clientaddr.INSIDE and tcp[0].fallback == udp[0]
    # Outside the subnet, as before.
    assert [p.mode for p in t.plans("192.0.2.7", 4000, True, True, avail)] == [clientaddr.VIA]
    assert [p.mode for p in _target().plans("10.88.0.7", 4000, True, True, avail)] == \
        [clientaddr.VIA]


def _add(**kw: Any) -> dict[str, Any]:
    return {"op": "add", "sandbox": "web", "netns": "/run/ns/web", "ip4": "10.88.0.2",
            "ports": [], **kw}


def test_onlink_round_trips_and_is_optional() -> None:
    req = messages.parse_request(_add(onlink=["10.88.0.0/16", "fd00::/64"]))
    assert isinstance(req, messages.Add)
    assert req.onlink == (NET, ipaddress.ip_network("fd00::/64"))
    assert messages.parse_request(req.to_json()) == req
    bare = messages.parse_request(_add())
    assert isinstance(bare, messages.Add) and bare.onlink == ()
    assert "onlink" not in bare.to_json()


@pytest.mark.parametrize("bad", ["10.88.0.0/16", [1], ["nope"], ["10.0.0.0/8"] * 65, {"a": 1}])
def test_bad_onlink_is_a_burrow_error_naming_the_field(bad: Any) -> None:
    with pytest.raises(BurrowError, match="field 'onlink' must be a list of at most 64 subnets"):
        messages.parse_request(_add(onlink=bad))
