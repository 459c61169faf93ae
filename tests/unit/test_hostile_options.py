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
