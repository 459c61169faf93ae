"""burrow-rootlessport's stdin config (spec/rootlessport.md §3): what Podman 4.3 writes is
accepted as written, and every hostile variation ends in a ConfigError naming the field
(never another exception, which would reach Podman as a traceback)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootless.rootlessport.config import ConfigError, Forward, parse
from rootless.rootlessport.control import parse_child_ip

CID = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def fds() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def podman_config(fds: tuple[int, int], **over: Any) -> dict[str, Any]:
    """The shape Podman 4.3.1 writes (rootless bridge, captured field by field)."""
    cfg: dict[str, Any] = {
        "Mappings": [{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1, "protocol": "tcp"},
                     {"host_ip": "127.0.0.1", "container_port": 53, "host_port": 8053, "range": 1,
                      "protocol": "tcp,udp"},
                     {"host_ip": "::1", "container_port": 8100, "host_port": 9100, "range": 3, "protocol": "tcp"}],
        "NetNSPath": "/run/user/1000/netns/netns-3f1e0c2a-9b7d-4b52-8f0e-1c2d3e4f5a6b",
        "ExitFD": fds[0], "ReadyFD": fds[1], "TmpDir": "/run/user/1000/libpod/tmp",
        "ChildIP": "10.89.0.2", "ContainerID": CID, "RootlessCNI": True}
    cfg.update(over)
    return cfg


def test_podman_config_parses_to_one_forward_per_port_and_protocol(fds: tuple[int, int]) -> None:
    cfg = parse(json.dumps(podman_config(fds)).encode())
    assert cfg.forwards == (
        Forward("tcp", "", 8080, 80),
        Forward("tcp", "127.0.0.1", 8053, 53), Forward("udp", "127.0.0.1", 8053, 53),
        Forward("tcp", "::1", 9100, 8100), Forward("tcp", "::1", 9101, 8101), Forward("tcp", "::1", 9102, 8102))
    assert (cfg.exit_fd, cfg.ready_fd, cfg.child_ip, cfg.container_id, cfg.rootless_cni) == (
        fds[0], fds[1], "10.89.0.2", CID, True)


def test_defaults_and_go_quirks(fds: tuple[int, int]) -> None:
    # Go marshals a nil slice as null; an empty ChildIP dials the container's loopback; unknown
    # keys are ignored; without RootlessCNI no TmpDir is needed.
    cfg = parse(json.dumps(podman_config(fds, Mappings=None, ChildIP="", TmpDir="", RootlessCNI=False,
                                         Extra={"x": 1})).encode())
    assert cfg.forwards == () and cfg.child_ip == "127.0.0.1" and cfg.tmp_dir == ""
    assert parse(json.dumps(podman_config(fds, ChildIP="fd89::0002")).encode()).child_ip == "fd89::2"


@pytest.mark.parametrize("over, field", [
    ({"ContainerID": "../../etc"}, "ContainerID"),
    ({"ContainerID": CID.upper()}, "ContainerID"),
    ({"NetNSPath": "relative/netns"}, "NetNSPath"),
    ({"NetNSPath": "/run/../etc/passwd"}, "NetNSPath"),
    ({"NetNSPath": "/run/x\u0000y"}, "NetNSPath"),
    ({"NetNSPath": None}, "NetNSPath"),
    ({"TmpDir": "tmp"}, "TmpDir"),
    ({"TmpDir": ""}, "TmpDir"),  # RootlessCNI needs it for the control socket
    ({"ExitFD": 0}, "ExitFD"),
    ({"ExitFD": True}, "ExitFD"),
    ({"ReadyFD": 1 << 19}, "ReadyFD"),  # not open
    ({"ReadyFD": "4"}, "ReadyFD"),
    ({"ChildIP": "10.89.0.300"}, "ChildIP"),
    ({"ChildIP": "fe80::1%eth0"}, "ChildIP"),
    ({"RootlessCNI": "yes"}, "RootlessCNI"),
    ({"Mappings": {"host_port": 1}}, "Mappings"),
    ({"Mappings": [1]}, "Mappings[0]"),
    ({"Mappings": [{"host_port": 0, "container_port": 80}]}, "host_port"),
    ({"Mappings": [{"host_port": 80, "container_port": 65536}]}, "container_port"),
    ({"Mappings": [{"host_port": 65535, "container_port": 80, "range": 2}]}, "past 65535"),
    ({"Mappings": [{"host_port": 80, "container_port": 80, "range": 0}]}, "range"),
    ({"Mappings": [{"host_port": 80, "container_port": 80, "protocol": "sctp"}]}, "sctp"),
    ({"Mappings": [{"host_port": 80, "container_port": 80, "host_ip": "localhost"}]}, "host_ip"),
    ({"Mappings": [{"host_port": 1, "container_port": 1, "range": 65535, "protocol": "tcp,udp"}]},
     "host ports"),
])
def test_hostile_fields_are_named(fds: tuple[int, int], over: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse(json.dumps(podman_config(fds, **over)).encode())


def test_exit_and_ready_must_differ_and_input_is_bounded(fds: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match="same fd"):
        parse(json.dumps(podman_config(fds, ReadyFD=fds[0])).encode())
    with pytest.raises(ConfigError, match="larger than"):
        parse(b" " * (1 << 20) + b"{}")
    for bad in (b"", b"[]", b"\xff\xfe", b"{\"ContainerID\": 1}"):
        with pytest.raises(ConfigError):
            parse(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["Mappings", "NetNSPath", "ExitFD", "ReadyFD", "TmpDir", "ChildIP",
                                        "ContainerID", "RootlessCNI", "host_ip"]), json_values, max_size=8))
def test_fuzzed_configs_fail_only_with_config_error(over: dict[str, Any]) -> None:
    r, w = os.pipe()
    try:
        parse(json.dumps(podman_config((r, w), **over)).encode())
    except ConfigError:
        pass
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("packet, want", [
    (b'"10.89.0.3"\n', "10.89.0.3"), (b'"fd89::3"\n', "fd89::3"), (b'""\n', "127.0.0.1")])
def test_control_packet(packet: bytes, want: str) -> None:
    assert parse_child_ip(packet) == want


@pytest.mark.parametrize("packet", [b"10.89.0.3\n", b'"10.89.0"\n', b"[]", b"\xff", b'{"ip": "1.2.3.4"}'])
def test_control_packet_hostile(packet: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_child_ip(packet)


def test_rootless_netns_is_found_only_when_unambiguous(tmp_path: Any) -> None:
    """Client addresses are kept by dialling from Podman's rootless netns: 4.3's and 5.x's
    places, and none when two storage roots each have one (the config does not say which)."""
    from rootless.rootlessport.forward import rootless_netns

    assert rootless_netns(str(tmp_path)) is None and rootless_netns("relative") is None
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "netns-1234").touch()  # a container's: never
    assert rootless_netns(str(tmp_path)) is None
    (tmp_path / "netns" / "rootless-netns-0123456789").touch()
    assert rootless_netns(str(tmp_path)) == str(tmp_path / "netns" / "rootless-netns-0123456789")
    v5 = tmp_path / "containers" / "networks" / "rootless-netns"
    v5.mkdir(parents=True)
    (v5 / "rootless-netns").touch()
    assert rootless_netns(str(tmp_path)) is None  # two: ambiguous
    (tmp_path / "netns" / "rootless-netns-0123456789").unlink()
    assert rootless_netns(str(tmp_path)) == str(v5 / "rootless-netns")


def test_control_server_answers_even_when_repointing_fails() -> None:
    """Podman reads to EOF and treats anything but OK as failure: a fault while re-pointing
    must come back as text at once (Podman would otherwise wait for the 5 s timeout)."""
    from netns.loop import Loop
    from rootless.rootlessport.control import ControlServer

    def broken(ip: str) -> None:
        raise RuntimeError("boom")

    import socket as s_

    a, b = s_.socketpair(s_.AF_UNIX, s_.SOCK_SEQPACKET)
    try:
        server = ControlServer(Loop(), a, broken)
        assert server.handle(b'"10.89.0.5"\n') == b"internal error: RuntimeError: boom"
        assert server.handle(b'"nope"\n').startswith(b"ChildIP")
    finally:
        a.close()
        b.close()


def test_phase_one_imports_stay_light() -> None:
    """Phase 1 runs while `podman run -p` waits for the ready byte: its imports must not pull in
    json, re, typing, socket, signal or enum (~15 ms of CPU against the interpreter's ~7 ms).
    The same parse, bind and control socket as Podman's first call, in a fresh interpreter."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from rootless.rootlessport import main; "
            "print(sorted(m for m in ('json', 're', 'typing', 'socket', 'signal', 'enum', 'collections',"
            " 'dataclasses', 'ipaddress', 'rootless.ports.splice') if m in sys.modules))")
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=repo,
                         env={"PYTHONPATH": str(repo)}, check=True)
    assert res.stdout.strip() == "[]", res.stdout


def test_light_named_tuple_behaves_as_typing_named_tuple() -> None:
    """Forward and the other phase 1 records are made by light.NamedTuple at run time."""
    from rootless.rootlessport.listen import ControlSocket

    f = Forward("tcp", "", 8080, 80)
    assert f == ("tcp", "", 8080, 80) and f.host_port == 8080 and hash(f) == hash(tuple(f))
    assert Forward(protocol="udp", host_ip="::1", container_port=53, host_port=5353) == \
        Forward("udp", "::1", 5353, 53)
    assert f._replace(host_port=1) == Forward("tcp", "", 1, 80) and f.host_port == 8080
    assert repr(f) == "Forward(protocol='tcp', host_ip='', host_port=8080, container_port=80)"
    assert Forward._fields == ("protocol", "host_ip", "host_port", "container_port")
    with pytest.raises(AttributeError):
        f.protocol = "udp"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Forward("tcp", "")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Forward("tcp", "", 1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        f._replace(port=1)
    assert callable(ControlSocket.close)  # methods come along
