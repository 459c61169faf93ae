"""burrow-dns as the engine starts it (netns/aardvark.py forks the engine process into it):
what `ps` shows, and a stale network file left behind by a bridge that is gone.
Everything runs in throwaway "host" and "container" namespaces.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options, wait_for
from tests.integration.test_dns_support import alive
from tests.nsutil import VENV_BIN, Netns, have, unique

pytestmark = pytest.mark.root


def _world(host: Netns, tmp_path: Path) -> World:
    return World(host, tmp_path / "cfg", "nftables", aardvark=str(VENV_BIN / "burrow-dns"),
                 env={"BURROW_DNS_RESOLV_CONF": "/dev/null"})


def _net(prefix: str) -> dict[str, object]:
    return network(unique("n"), unique("bd"), [(f"{prefix}.0/24", f"{prefix}.1")], dns_enabled=True)


def test_forked_dns_server_says_what_it_is(host_ns: Netns, netns_factory: Callable[[], Netns],
                                           tmp_path: Path) -> None:
    w = _world(host_ns, tmp_path)
    ctr = netns_factory()
    net = _net("10.79.1")
    o = options("web1", [(net, {"interface_name": "eth0", "static_ips": ["10.79.1.2"]})])
    w.setup(ctr, o)
    dns_dir = w.config / "aardvark-dns"
    pid = int((dns_dir / "aardvark.pid").read_text())
    assert alive(pid)
    # not the `python -m netns.netavark_cli ... setup <netns>` of the engine it was forked from
    assert Path(f"/proc/{pid}/cmdline").read_text().strip("\0") == (
        f"burrow-dns --config {dns_dir} -p 53 run")
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "burrow-dns"
    w.teardown(ctr, o)


def test_stale_network_file_does_not_break_the_next_setup(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """Issue 10: a network whose bridge is gone (netns rebuilt, no teardown) left its DNS file;
    every later setup then failed: 'failed to bind udp listener ...: Cannot assign requested
    address'. Now its address is left out and the live network is served."""
    if not have("dig"):
        pytest.skip("environment: needs dig")
    w = _world(host_ns, tmp_path)
    dns_dir = w.config / "aardvark-dns"
    dns_dir.mkdir(parents=True)
    (dns_dir / "gonenet").write_text(f"10.79.250.1\n{'e' * 64} 10.79.250.2  ghost\n")
    ctr = netns_factory()
    net = _net("10.79.2")
    o = options("web2", [(net, {"interface_name": "eth0", "static_ips": ["10.79.2.2"]})])
    w.setup(ctr, o)
    pid = int((dns_dir / "aardvark.pid").read_text())

    def dig(name: str) -> str:
        return ctr.run(["dig", "+short", "+time=2", "+tries=2", "@10.79.2.1", name],
                       check=False).stdout.strip()

    assert wait_for(lambda: dig("web2") == "10.79.2.2")
    assert alive(pid)
    w.teardown(ctr, o)
    assert wait_for(lambda: not alive(pid))  # only the stale network left: nothing to serve
    assert not os.path.exists(dns_dir / "aardvark.pid")


AARDVARK_14 = "/usr/lib/podman/aardvark-dns"


def test_aardvark_binary_other_than_burrow_dns_is_execd(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """Issue 10: `--aardvark-binary` naming another server (a user who keeps aardvark-dns) runs
    that binary as netavark does (`<bin> --config <dir>/aardvark-dns -p <port> run`, RUST_LOG
    set); the engine forks its own burrow-dns only when the binary is burrow-dns."""
    if not os.access(AARDVARK_14, os.X_OK) or not have("dig"):
        pytest.skip("environment: needs Debian's aardvark-dns 1.4 and dig")
    w = World(host_ns, tmp_path / "cfg", "nftables", aardvark=AARDVARK_14)
    ctr = netns_factory()
    net = _net("10.79.3")
    o = options("web3", [(net, {"interface_name": "eth0", "static_ips": ["10.79.3.2"]})])
    w.setup(ctr, o)
    dns_dir = w.config / "aardvark-dns"
    pid = int((dns_dir / "aardvark.pid").read_text())
    try:
        assert os.readlink(f"/proc/{pid}/exe") == AARDVARK_14
        assert Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:6] == [
            AARDVARK_14, "--config", str(dns_dir), "-p", "53", "run"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert any(e.startswith(b"RUST_LOG=") for e in environ)

        def dig(name: str) -> str:
            return ctr.run(["dig", "+short", "+time=1", "+tries=2", "@10.79.3.1", name],
                           check=False).stdout.strip()

        assert wait_for(lambda: dig("web3") == "10.79.3.2")
        w.teardown(ctr, o)
        assert wait_for(lambda: not alive(pid))
    finally:
        if alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("server", ["burrow-dns", "aardvark-dns 1.4"])
def test_names_and_aliases_with_dots_resolve_through_the_engine(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, server: str
) -> None:
    """Podman lets a container's name and network aliases hold dots (`web.v1`,
    `--network-alias api.example.test`): the engine writes them, and the DNS server must
    answer them, with and without the search domain. Run against aardvark-dns 1.4 as well,
    as the reference: burrow-dns forwarded them upstream (or said NXDOMAIN) before 0a715cb."""
    if not have("dig"):
        pytest.skip("environment: needs dig")
    if server != "burrow-dns" and not os.access(AARDVARK_14, os.X_OK):
        pytest.skip("environment: needs Debian's aardvark-dns 1.4")
    w = (_world(host_ns, tmp_path) if server == "burrow-dns" else
         World(host_ns, tmp_path / "cfg", "nftables", aardvark=AARDVARK_14))
    ctr, peer = netns_factory(), netns_factory()
    net = _net("10.79.4")
    o = options("web.v1", [(net, {"interface_name": "eth0", "static_ips": ["10.79.4.2"],
                                  "aliases": ["api.example.test"]})])
    p = options("peer", [(net, {"interface_name": "eth0", "static_ips": ["10.79.4.3"]})])
    w.setup(ctr, o)
    w.setup(peer, p)
    pid = int((w.config / "aardvark-dns" / "aardvark.pid").read_text())
    try:
        def dig(name: str) -> str:
            return peer.run(["dig", "+short", "+time=1", "+tries=2", "@10.79.4.1", name],
                            check=False).stdout.strip()

        assert wait_for(lambda: dig("peer") == "10.79.4.3")
        for name in ("web.v1", "API.Example.Test.", "web.v1.dns.podman", "api.example.test.dns.podman"):
            assert dig(name) == "10.79.4.2", name
        w.teardown(peer, p)
        w.teardown(ctr, o)
        assert wait_for(lambda: not alive(pid))
    finally:
        if alive(pid):
            os.kill(pid, 9)
