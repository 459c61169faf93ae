"""The Netavark JSON contract against every captured Podman exchange."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netns.errors import BurrowError
from netns.schema import Network, NetworkOptions, StatusBlock, dump_status
from tests.samples import network_configs, records

RECORDS = records()
STDIN_RECORDS = {k: v for k, v in RECORDS.items() if isinstance(v.get("stdin"), dict)}
STDOUT_RECORDS = {
    k: v for k, v in RECORDS.items() if isinstance(v.get("stdout"), dict) and "error" not in v["stdout"]
}


def test_samples_are_there() -> None:
    assert len(STDIN_RECORDS) >= 15
    assert len(STDOUT_RECORDS) >= 5


@pytest.mark.parametrize("name", sorted(STDIN_RECORDS))
def test_request_round_trips(name: str) -> None:
    raw = STDIN_RECORDS[name]["stdin"]
    opts = NetworkOptions.from_json(raw)
    assert opts.to_json() == raw
    assert NetworkOptions.loads(json.dumps(raw)) == opts


@pytest.mark.parametrize("name", sorted(STDOUT_RECORDS))
def test_status_round_trips(name: str) -> None:
    raw = STDOUT_RECORDS[name]["stdout"]
    blocks = {k: StatusBlock.from_json(v) for k, v in raw.items()}
    assert json.loads(dump_status(blocks)) == raw


@pytest.mark.parametrize("name", sorted(network_configs()))
def test_network_config_round_trips(name: str) -> None:
    raw = network_configs()[name]
    assert Network.from_json(raw).to_json() == raw


def _two_x(raw: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    out["networks"] = [{"name": n, **o} for n, o in raw["networks"].items()]
    return out


def test_accepts_2x_array_shape_and_keeps_order() -> None:
    raw = STDIN_RECORDS["rootful-setup-2nets-static-ip-mac-alias-ports-tcp-udp-range.json"]["stdin"]
    arr = _two_x(raw)
    arr["networks"].reverse()
    arr["container_hostname"] = "pda-host"
    arr["network_info"]["pdnet1"]["routes"] = [{"destination": "10.99.0.0/16", "gateway": "10.89.7.5"}]
    arr["some_future_field"] = {"x": 1}
    opts = NetworkOptions.from_json(arr)
    assert [n for n, _ in opts.networks] == ["pdnet2", "pdnet1"]
    assert opts.container_hostname == "pda-host"
    assert opts.to_json() == arr


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("container_id"), "missing field `container_id`"),
        (lambda d: d.update(networks=5), "expected a map or an array"),
        (lambda d: d["network_info"]["pdnet1"].update(subnets=[{"subnet": "10.1.2.300/24"}]), "not a CIDR"),
        (lambda d: d["networks"]["pdnet1"].update(static_ips=["10.89.7.x"]), "not an IPv4 or IPv6"),
        (lambda d: d["port_mappings"][0].update(host_port="80"), "expected integer"),
        (lambda d: d["network_info"]["pdnet1"].update(internal="no"), "expected bool"),
    ],
)
def test_structural_errors_are_clear(mutate: Any, message: str) -> None:
    raw = json.loads(json.dumps(STDIN_RECORDS["rootful-setup-2nets-static-ip-mac-alias-ports-tcp-udp-range.json"]["stdin"]))
    mutate(raw)
    with pytest.raises(BurrowError, match=message):
        NetworkOptions.from_json(raw)


def test_malformed_json() -> None:
    with pytest.raises(BurrowError, match="failed to load network options: JSON Decoding error"):
        NetworkOptions.loads(b"{not json")
