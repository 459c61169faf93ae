"""`create` looking for a free IPv4 subnet in the pools walked them one /size at a time, used or
not: a pool 10.0.0.0/8 of /30s with 10.0.0.0/8 in use took ~40 s to say there was none, and an
IPv6 pool (fd00::/8 of /64s) never returned. Now a used block is stepped over at once, and the
answer is the same first free subnet as before."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netns import engine, ipam
from netns.errors import BurrowError
from netns.schema import CreateRequest

MAX_CALLS = 10_000  # the old walk made ~4 million overlap checks here


def request(pools: list[dict[str, Any]], used: list[str]) -> CreateRequest:
    return CreateRequest.loads(json.dumps({
        "network": {"name": "fz", "driver": "bridge", "ipv6_enabled": False, "dns_enabled": False},
        "used": {"interfaces": [], "names": [], "subnets": used},
        "options": {"subnet_pools": pools, "check_used_subnets": True},
    }).encode())


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = ipam.overlaps

    def overlaps(*args: Any) -> bool:
        calls[0] += 1
        assert calls[0] < MAX_CALLS, "create walks the pool one subnet at a time"
        return real(*args)

    monkeypatch.setattr(ipam, "overlaps", overlaps)
    return calls


@pytest.mark.parametrize("pools", [
    [{"base": "10.0.0.0/8", "size": 30}],
    [{"base": "fd00::/8", "size": 64}, {"base": "10.0.0.0/8", "size": 30}],
], ids=["v4_pool_all_used", "v6_pool_first"])
def test_a_used_pool_is_exhausted_without_walking_it(counted: list[int], pools: list[dict[str, Any]]) -> None:
    with pytest.raises(BurrowError, match="could not find a free subnet"):
        engine.create(request(pools, ["10.0.0.0/8", "fd00::/8"]))


def test_the_first_free_subnet_past_used_blocks(counted: list[int]) -> None:
    net = engine.create(request([{"base": "10.0.0.0/8", "size": 30}],
                                ["10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/24"]))
    assert [str(s.subnet) for s in net.subnets] == ["10.192.1.0/30"]


SMALL = ipaddress.ip_network("10.5.0.0/24")


@settings(max_examples=60, deadline=None)
@given(size=st.integers(24, 30),
       used=st.lists(st.tuples(st.integers(0, 255), st.integers(24, 32)), max_size=6))
def test_same_answer_as_walking_every_subnet(size: int, used: list[tuple[int, int]]) -> None:
    """The guard of the change (it held before it too): stepping over used blocks finds the
    subnet the one-by-one walk found."""
    blocks = [str(ipaddress.ip_network((int(SMALL.network_address) + off, plen), strict=False))
              for off, plen in used]
    taken = [ipaddress.ip_network(b) for b in blocks]
    want = next((str(c) for c in SMALL.subnets(new_prefix=size)
                 if not any(c.overlaps(u) for u in taken)), None)
    try:
        got = str(engine.create(request([{"base": str(SMALL), "size": size}], blocks)).subnets[0].subnet)
    except BurrowError:
        got = None
    assert got == want
