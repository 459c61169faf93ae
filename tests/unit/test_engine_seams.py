"""The seams of the engine, pure: the driver and IPAM registries, the undo stack, the one
free-subnet search."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from netns import drivers, engine, ipam
from netns.drivers.bridge import BridgeAttachment
from netns.drivers.macvlan import MacvlanAttachment
from netns.errors import BurrowError
from netns.schema import Network, NetworkOptions, PerNetworkOptions, Subnet
from netns.undo import UndoStack

NET = ipaddress.ip_network


def options(driver: str = "bridge", **net_kw: Any) -> NetworkOptions:
    kw: dict[str, Any] = {"network_interface": "br-seam" if driver == "bridge" else None,
                          "subnets": (Subnet(NET("10.96.0.0/24"), ipaddress.ip_address("10.96.0.1")),)}
    kw.update(net_kw)
    net = Network(name="seam", id="0" * 64, driver=driver, dns_enabled=True, **kw)
    per = PerNetworkOptions("eth0", static_ips=(ipaddress.ip_address("10.96.0.5"),))
    return NetworkOptions("c" * 64, "web", (("seam", per),), {"seam": net})


def test_each_driver_parses_into_its_own_attachment_type() -> None:
    (b,) = engine.prepare(options("bridge")).attachments
    (m,) = engine.prepare(options("macvlan")).attachments
    assert type(b) is BridgeAttachment and b.bridge == "br-seam" and b.managed
    assert type(m) is MacvlanAttachment and m.parent is None and m.mode == "bridge"
    assert [str(a) for a in b.addresses] == ["10.96.0.5/24"]  # filled in by host-local IPAM
    assert drivers.of(b) is drivers.REGISTRY["bridge"] and drivers.of(m) is drivers.REGISTRY["macvlan"]


def test_what_each_driver_says_about_firewall_and_dns() -> None:
    (b,) = engine.prepare(options("bridge")).attachments
    (internal,) = engine.prepare(options("bridge", internal=True)).attachments
    (unmanaged,) = engine.prepare(options("bridge", options={"mode": "unmanaged"})).attachments
    (m,) = engine.prepare(options("macvlan")).attachments
    fw = drivers.of(b).firewall(b, None)
    assert fw is not None and fw.bridge == "br-seam" and fw.subnets == (NET("10.96.0.0/24"),)
    assert drivers.of(b).firewall(internal, None) is None
    assert drivers.of(b).firewall(unmanaged, None) is None
    assert drivers.of(m).firewall(m, None) is None
    assert drivers.of(b).dns(b) and not drivers.of(m).dns(m)


def test_a_driver_refuses_another_drivers_attachment() -> None:
    (m,) = engine.prepare(options("macvlan")).attachments
    with pytest.raises(TypeError):
        drivers.REGISTRY["bridge"].plan_setup(m, has_ports=False)


def test_unknown_drivers_and_ipams_are_named() -> None:
    with pytest.raises(BurrowError, match=r"unknown network driver 'vxlan' \(supported: bridge, macvlan, ipvlan\)"):
        drivers.get("vxlan")
    with pytest.raises(BurrowError, match="dhcp ipam driver is not supported"):
        ipam.get("dhcp")
    with pytest.raises(BurrowError, match=r"unsupported ipam driver 'x' \(use host-local or none\)"):
        ipam.get("x")


def test_ipam_none_gives_no_addresses() -> None:
    (a,) = engine.prepare(options(ipam_options={"driver": "none"})).attachments
    assert a.addresses == ()


def test_free_subnet_skips_what_is_used_and_names_exhaustion() -> None:
    pool = ipam.pool_subnets(NET("10.89.0.0/22"), 24)
    used = [NET("10.89.0.0/24"), NET("10.89.1.128/25"), NET("fd00::/8")]
    assert ipam.free_subnet(pool, used, exhausted="x") == NET("10.89.2.0/24")
    with pytest.raises(BurrowError, match="^all gone$"):
        ipam.free_subnet(ipam.pool_subnets(NET("10.89.0.0/24"), 24), used, exhausted="all gone")
    with pytest.raises(BurrowError, match="does not fit the pool"):
        list(ipam.pool_subnets(NET("10.89.0.0/16"), 33))


def test_undo_stack_unwinds_in_reverse_attempts_every_step_and_collects_errors() -> None:
    done: list[str] = []
    stack = UndoStack()

    def fail(what: str) -> None:
        done.append(what)
        raise OSError(5, "Input/output error")

    stack.push("undo a", lambda: done.append("a"))
    stack.push("undo b", lambda: fail("b"))
    stack.push("undo c", lambda: done.append("c"))
    stack.push("undo d", lambda: (_ for _ in ()).throw(BurrowError("gone")))
    errors = stack.unwind()
    assert done == ["c", "b", "a"] and len(stack) == 0
    assert [str(e) for e in errors] == ["undo d: gone", "undo b: IO error: Input/output error (os error 5)"]
    assert stack.unwind() == []


def test_warm_engine_preloads_what_a_cni_call_needs() -> None:
    """A first burrow-cni ADD through a fresh engine must not pay ~50 ms of imports: the
    engine's preload covers the CNI front door as it does the Netavark one."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from netns import server; server.preload(); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('netns.cni'))))")  # fmt: skip
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True)
    loaded = set(res.stdout.split())
    served = {"netns.cni.plugin", "netns.cni.config", "netns.cni.hostlocal", "netns.cni.translate",
              "netns.cni.result", "netns.cni.transport", "netns.cni.attachments"}  # fmt: skip
    assert served <= loaded, served - loaded


def test_engine_freezes_its_preload_and_a_forked_daemon_collects_again() -> None:
    """The warm engine keeps the collector off a request's clock (its preloaded modules are
    frozen out of every collection, collection is off while a request runs); a daemon it
    forks meanwhile (burrow-dns) must still collect its garbage."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import gc, os; from netns import server; server.preload(); server.settle_memory(); "
        "frozen = gc.get_freeze_count(); gc.disable(); r, w = os.pipe(); pid = os.fork()\n"
        "if pid == 0:\n    os.write(w, b'1' if gc.isenabled() else b'0'); os._exit(0)\n"
        "os.waitpid(pid, 0); print(frozen, os.read(r, 1).decode(), gc.isenabled())"
    )
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True)
    frozen, child_enabled, parent_enabled = res.stdout.split()
    assert int(frozen) > 10_000 and child_enabled == "1" and parent_enabled == "False"
