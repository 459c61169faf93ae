"""The CLI's Podman shapes run by root, in a throwaway net+mount namespace (the `rf` world of
test_rootful_cli.py: this machine's own network is never touched): `--network none`, a host
port burrow picks for `-p CTR` (kernel DNAT, nothing listens on it), and `network reload`
bringing back a sandbox's rules after the firewall was flushed, as `podman network reload`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.integration.test_rootful_cli import Rootful, sh
from tests.integration.test_rootless_sandbox import serve
from tests.nsutil import Netns

pytestmark = pytest.mark.root


@pytest.fixture
def rf(netns_factory: Callable[[], Netns]) -> Iterator[Rootful]:
    w = Rootful(netns_factory())
    yield w
    left = w.close()
    assert not left, f"processes left after `burrow down`: {left}"


def test_rootful_network_none_is_loopback_only(rf: Rootful) -> None:
    rf.burrow("sandbox", "create", "iso", "--network", "none", check=True, timeout=60)
    links = sh(rf, "iso", "ip -br link").out.split()
    assert links[0] == "lo" and "eth0" not in links
    assert sh(rf, "iso", "ip -br addr show lo").out.split()[2] == "127.0.0.1/8"  # up
    assert json.loads(rf.burrow("sandbox", "inspect", "iso", check=True).out)["networks"] == {}
    rf.burrow("sandbox", "rm", "iso", check=True, timeout=60)


def test_rootful_random_host_port_and_reload_after_a_flush(rf: Rootful) -> None:
    rf.burrow("sandbox", "create", "web", "-p", "80", check=True, timeout=60)
    (row,) = json.loads(rf.burrow("port", "ls", "web", "--format", "json", check=True).out)
    port = row["host_port"]
    assert row["container_port"] == 80 and port > 1024
    serve(rf, "web", "t:80", "web")
    assert rf.tcp(rf.v4, port) == b"web:hi"
    rf.ns.run(["nft", "flush", "ruleset"])  # what a firewall restart does to foreign rules
    with pytest.raises(OSError):
        rf.tcp(rf.v4, port, timeout=2)
    assert rf.burrow("network", "reload", "web", check=True, timeout=60).out.split() == ["web"]
    assert rf.tcp(rf.v4, port) == b"web:hi"
    assert rf.tcp(rf.v6, port) == b"web:hi"
