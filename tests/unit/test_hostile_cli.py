"""`burrow network create` flags checked as the engine will check them, before the network is
saved: a `--dns fe80::1%x` was saved and then failed every sandbox's setup on that network
(the engine refuses a %zone), `--subnet fd00::%zz/64` likewise, and a `--gateway` that is no
address leaked as "Error: ValueError: ...". Each is now one error naming the flag."""

from __future__ import annotations

import pytest

from netns.errors import BurrowError
from rootless.netconf import NetworkRequest, make_network


@pytest.mark.parametrize(("request_", "message"), [
    (NetworkRequest("n", dns=("fe80::1%x y",)), "invalid --dns"),
    (NetworkRequest("n", dns=("fd00::53%eth0",)), "invalid --dns"),
    (NetworkRequest("n", subnets=("fd00:1::%zz/64",)), "invalid subnet"),
    (NetworkRequest("n", subnets=("10.99.1.0/24",), gateways=("nope",)), "invalid --gateway"),
    (NetworkRequest("n", subnets=("fd00:2::/64",), gateways=("fd00:2::1%x",)), "%zone"),
], ids=["dns_zone_space", "dns_zone", "subnet_zone", "gateway_junk", "gateway_zone"])
def test_a_flag_the_engine_would_refuse_is_refused_at_create(
    request_: NetworkRequest, message: str
) -> None:
    with pytest.raises(BurrowError, match=message):
        make_network(request_, {}, None)


def test_the_same_flags_without_the_zone_are_fine() -> None:
    net = make_network(NetworkRequest("n", subnets=("fd00:2::/64",), gateways=("fd00:2::1",),
                                      dns=("fd00::53",)), {}, None)
    assert net["network_dns_servers"] == ["fd00::53"]
    assert net["subnets"][0] == {"subnet": "fd00:2::/64", "gateway": "fd00:2::1"}


@pytest.mark.parametrize("opt", ["mtu=\u00b2", "metric=\u00b2", "mtu=\u0661\u0665\u0660\u0660"])
def test_a_number_opt_in_other_digits_is_refused(opt: str) -> None:
    """"²".isdigit() is True: mtu=² leaked "Error: ValueError", metric=² was saved and then
    refused by the engine at every sandbox's setup."""
    from rootless.netconf import parse_opts

    assert parse_opts(["mtu=1500", "metric=10"]) == (("mtu", "1500"), ("metric", "10"))
    with pytest.raises(BurrowError, match="expected a number"):
        parse_opts([opt])
