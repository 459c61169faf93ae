"""Network option values that Python's str/int take but Netavark (Rust's parse::<u32>/<u16>)
does not: "²".isdigit() is True yet int("²") raises, so vlan="²" was an "internal error" at
validation; int() also took " 1500 ", "1_500" and other scripts' digits for mtu and metric.
Each is now a plain refusal naming the option."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from netns import validate
from netns.errors import BurrowError
from netns.schema import NetworkOptions
from tests.samples import records

SAMPLE = records()["rootful-setup-2nets-static-ip-mac-alias-ports-tcp-udp-range.json"]["stdin"]


def _with_option(key: str, value: str) -> bytes:
    opts: dict[str, Any] = copy.deepcopy(json.loads(SAMPLE) if isinstance(SAMPLE, str) else SAMPLE)
    net = next(iter(opts["network_info"].values()))
    net.setdefault("options", {})[key] = value
    return json.dumps(opts).encode()


@pytest.mark.parametrize(("key", "value"), [
    ("vlan", "\u00b2"), ("vlan", "\u0663"), ("mtu", " 1500 "), ("mtu", "1_500"),
    ("mtu", "\u0661\u0665\u0660\u0660"), ("metric", "1_0"),
])
def test_a_number_option_outside_ascii_digits_is_refused(key: str, value: str) -> None:
    validate.request(NetworkOptions.loads(_with_option(key, "1500" if key == "mtu" else "10")))
    with pytest.raises(BurrowError, match=f"'{key}'"):
        validate.request(NetworkOptions.loads(_with_option(key, value)))


@pytest.mark.parametrize("mapping", [
    {"hostPort": 8080.9, "containerPort": 80},
    {"hostPort": True, "containerPort": 80},
    {"hostPort": "8080", "containerPort": 80},
    {"hostPort": 8080, "containerPort": 80, "hostIP": {"a": 1}},
    {"hostPort": 8080, "containerPort": 80, "protocol": ["tcp"]},
], ids=["float", "bool", "string", "host_ip_object", "protocol_list"])
def test_a_cni_port_mapping_of_the_wrong_json_type_is_refused(mapping: dict[str, Any]) -> None:
    """int() made 8080.9 into port 8080, true into port 1 and "8080" into 8080; str() made an
    object into a host address to parse. The reference portmap plugin (Go) refuses them."""
    from netns.cni import config as C
    from netns.cni.errors import CniError
    from tests.unit.test_cni_config import conf

    good = C.parse_conf(conf(runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80}]}))
    assert C.port_mappings(good)[0].host_port == 8080
    bad = C.parse_conf(conf(runtimeConfig={"portMappings": [mapping]}))
    with pytest.raises(CniError) as info:
        C.port_mappings(bad)
    assert info.value.code == 7 and "must be" in info.value.msg
