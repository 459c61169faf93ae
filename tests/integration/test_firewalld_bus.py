"""The D-Bus client against a real firewalld on a private bus (tests/firewalld_env.py)."""

from __future__ import annotations

import os

import pytest

from netns.firewalld import api, bus
from tests.firewalld_env import FirewalldEnv
from tests.nsutil import Netns

pytestmark = pytest.mark.root


def test_harness_firewalld_is_private(firewalld: FirewalldEnv, host_ns: Netns) -> None:
    # Its ruleset is in the test's host netns; its bus address never reached this process.
    assert "table inet firewalld" in host_ns.run(["nft", "list", "tables"]).stdout
    assert os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") != firewalld.address
    assert firewalld.cmd("--state").stdout.strip() == "running"
    # Its config is the test's: firewalld wrote nothing it was not told to write elsewhere.
    assert (firewalld.system_config / "firewalld.conf").exists()


def test_harness_stop_leaves_nothing(host_ns: Netns) -> None:
    from tests.firewalld_env import missing_tools, start

    if missing_tools():
        pytest.skip(f"environment: {', '.join(missing_tools())} not installed (scripts/install --test)")
    fenv = start(host_ns)
    pids, where = [p.pid for p in fenv.procs], fenv.dir
    fenv.stop()
    assert not where.exists()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} left running"
    assert bus.open_system(fenv.env) is None  # the socket went with the dir


def test_probe_and_zone_sources(firewalld: FirewalldEnv) -> None:
    assert api.is_running(firewalld.env)
    with firewalld.api() as fw:
        assert fw.state() == "RUNNING"
        assert fw.default_zone() == "public"
        assert "trusted" in fw.zones()
        fw.add_source("trusted", "10.213.7.0/24")
        assert fw.sources("trusted") == ["10.213.7.0/24"]
        assert fw.zone_of_source("10.213.7.0/24") == "trusted"
        # firewall-cmd sees the same runtime state.
        assert "10.213.7.0/24" in firewalld.cmd("--zone=trusted", "--list-sources").stdout
        fw.change_zone_of_source("public", "10.213.7.0/24")
        assert fw.zone_of_source("10.213.7.0/24") == "public"
        fw.remove_source("public", "10.213.7.0/24")
        assert fw.zone_of_source("10.213.7.0/24") == ""
        assert fw.sources("trusted") == []


def test_errors_name_the_call_and_firewalld_s_code(firewalld: FirewalldEnv) -> None:
    with firewalld.api() as fw:
        with pytest.raises(bus.BusError) as err:
            fw.remove_source("trusted", "10.213.8.0/24")
        assert api.error_code(err.value) == "UNKNOWN_SOURCE"
        assert "org.fedoraproject.FirewallD1.zone.removeSource" in str(err.value)
        with pytest.raises(bus.BusError) as err:
            fw.add_source("no_such_zone", "10.213.8.0/24")
        assert api.error_code(err.value) == "INVALID_ZONE"


def test_permanent_policy_and_runtime_settings(firewalld: FirewalldEnv) -> None:
    with firewalld.api() as fw:
        assert "bfdc_policy" not in fw.config_policy_names()
        fw.config_add_policy("bfdc_policy", {"ingress_zones": ["HOST"], "egress_zones": ["ANY"],
                                             "target": "CONTINUE"})
        assert "bfdc_policy" in fw.config_policy_names()
        assert (firewalld.system_config / "policies" / "bfdc_policy.xml").exists()
        assert "bfdc_policy" not in fw.policies()  # permanent only, until a reload
        fw.reload()
        assert "bfdc_policy" in fw.policies()
        rule = 'rule family="ipv4" destination address="10.213.9.1" forward-port port="8080" protocol="tcp" to-port="80" to-addr="10.213.9.2"'
        fw.set_policy_settings("bfdc_policy", {"rich_rules": [rule],
                                               "forward_ports": [("81", "tcp", "80", "10.213.9.2")]})
        got = fw.policy_settings("bfdc_policy")
        assert got["rich_rules"] == [rule]
        assert got["forward_ports"] == [("81", "tcp", "80", "10.213.9.2")]
        fw.config_remove_policy("bfdc_policy")
        assert not (firewalld.system_config / "policies" / "bfdc_policy.xml").exists()
        fw.config_add_zone("bfdc_zone", {"target": "ACCEPT"})
        assert "bfdc_zone" in fw.config_zone_names()
        fw.config_remove_zone("bfdc_zone")
        assert "bfdc_zone" not in fw.config_zone_names()


def test_reloaded_signal_arrives(firewalld: FirewalldEnv) -> None:
    with firewalld.api() as fw, fw.reloaded() as signals:
        assert signals.wait(timeout=0) is None  # nothing yet
        firewalld.cmd("--reload")  # firewall-cmd, another client: what an admin does
        msg = signals.wait(timeout=30)
        assert msg is not None and msg.header.fields  # the Reloaded signal itself
        assert signals.wait(timeout=0) is None


def test_probe_says_no_when_firewalld_stops_but_the_bus_stays(firewalld: FirewalldEnv) -> None:
    fwd = firewalld.procs[1]
    fwd.kill()
    fwd.wait()
    with api.connect(firewalld.env) as fw:
        assert fw is None  # the bus answered NameHasOwner: no
    # The bus itself still runs, so this was the one-call probe, not a missing socket.
    b = bus.open_system(firewalld.env)
    assert b is not None
    b.close()
