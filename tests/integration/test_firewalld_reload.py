"""`burrow-netavark firewalld-reload` against a real firewalld: what `firewall-cmd --reload`
(and a firewalld restart) drops comes back, and the containers' traffic with it.

Topology as in test_firewalld_trusted.py: out ns 172.31.9.2 ── host ns (firewalld) ── bridge
10.213.6.1/24 ── ctr 10.213.6.2, which publishes 8080 -> 7002.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from netns import netavark_cli
from tests.engine_util import World, network, options, port, request, start_server, wait_for
from tests.firewalld_env import FirewalldEnv
from tests.nsutil import VENV_BIN, Netns, unique

pytestmark = pytest.mark.root

V4 = "10.213.6.0/24"
READY = "listening for firewalld reloads"


def _world(driver: str, host: Netns, out: Netns, tmp: Path, env: dict[str, str]) -> World:
    link = unique("bfdco")
    host.run(["sh", "-ec", f"ip link add {link} type veth peer name eth0 netns {out.pid}; "
              f"ip addr add 172.31.9.1/24 dev {link}; ip link set {link} up"])
    out.run(["sh", "-ec", "ip addr add 172.31.9.2/24 dev eth0; ip link set eth0 up; "
             "ip route add default via 172.31.9.1"])
    return World(host, tmp / "config", driver, env=env)


@contextmanager
def listener(w: World, fenv: FirewalldEnv, tmp: Path) -> Iterator[Path]:
    """The listener as systemd would run it (the venv's burrow-netavark), in the host netns."""
    log = tmp / "reload.log"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "RUST_LOG": "debug", **fenv.env}
    with open(log, "w") as f:
        proc = w.host.popen([str(VENV_BIN / "burrow-netavark"), "--config", str(w.config),
                             "firewalld-reload"], stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        assert wait_for(lambda: READY in log.read_text() or proc.poll() is not None, 30), log.read_text()
        assert proc.poll() is None, log.read_text()
        yield log
    finally:
        proc.kill()
        proc.wait()


def _trusted(fenv: FirewalldEnv) -> list[str]:
    with fenv.api() as fw:
        return fw.sources("trusted")


def _bound(fenv: FirewalldEnv, driver: str) -> bool:
    """The subnet is in the zone its driver binds it to (the firewalld driver: its own zone)."""
    with fenv.api() as fw:
        return fw.zone_of_source(V4) == ("netavark_zone" if driver == "firewalld" else "trusted")


def _reach(c: Netns, out: Netns) -> bool:
    return request(c, "172.31.9.2", 7000) == "hello 7000" and \
        request(out, "172.31.9.1", 8080) == "hello 7002"


@pytest.mark.parametrize("driver", ["nftables", "iptables", "firewalld"])
def test_rules_come_back_after_firewalld_reload(
    driver: str, firewalld: FirewalldEnv, host_ns: Netns,
    netns_factory: Callable[[], Netns], tmp_path: Path,
) -> None:
    out, c1 = netns_factory(), netns_factory()
    w = _world(driver, host_ns, out, tmp_path, firewalld.env)
    net = network("bfdcnet", unique("bfdcb"), [(V4, "10.213.6.1")])
    o1 = options("c1", [(net, {"interface_name": "eth0", "static_ips": ["10.213.6.2"]})],
                 [port(8080, 7002)])
    w.setup(c1, o1)
    start_server(out, 7000)
    start_server(c1, 7002)
    assert _reach(c1, out)

    # Without the listener a reload drops the binding, and firewalld then rejects the
    # container's outgoing traffic: what the listener is for.
    firewalld.cmd("--reload")
    assert not _bound(firewalld, driver)
    assert request(c1, "172.31.9.2", 7000).startswith("FAILED")

    with listener(w, firewalld, tmp_path) as log:
        # At start it re-applies at once (firewalld may have flushed before it started).
        assert _bound(firewalld, driver)
        assert _reach(c1, out)
        for _ in range(2):  # every reload, not just the first
            firewalld.cmd("--reload")
            t0 = time.monotonic()
            assert wait_for(lambda: _bound(firewalld, driver) and _reach(c1, out), 2.0), log.read_text()
            back = time.monotonic() - t0
        assert "re-applied the firewall rules" in log.read_text()
        print(f"rules back {back * 1000:.0f} ms after firewall-cmd --reload returned")

        # A firewalld restart sends no Reloaded: the new owner of its bus name is the cue.
        firewalld.restart()
        assert wait_for(lambda: _bound(firewalld, driver), 10.0), log.read_text()
        assert _reach(c1, out)
    w.teardown(c1, o1)
    assert _trusted(firewalld) == [] and not _bound(firewalld, driver)


def test_listener_without_a_bus_says_so(host_ns: Netns, tmp_path: Path) -> None:
    res = host_ns.run([str(VENV_BIN / "burrow-netavark"), "--config", str(tmp_path), "firewalld-reload"],
                      env={"PATH": "/usr/bin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": ""}, check=False)
    assert res.returncode == 1
    assert json.loads(res.stdout) == {
        "error": "firewalld-reload: DBus error: no system bus (DBUS_SYSTEM_BUS_ADDRESS is empty)"}


def test_engine_never_runs_the_listener() -> None:
    # The warm engine serves one request at a time: a never-ending one must be refused.
    out, _err, code = netavark_cli.run(["--config", "/nonexistent", "firewalld-reload"], b"", {})
    assert code == 1 and "runs as its own process" in json.loads(out)["error"]
