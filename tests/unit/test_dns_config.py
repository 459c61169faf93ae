"""Aardvark config files: the 1.4 and newest forms, and bad files skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from netns.dns.config import ConfigError, load_dir, parse_network

ID = "f352" + "0" * 60


def test_header_with_network_servers_and_dual_stack() -> None:
    net = parse_network("pdnet1", "10.89.0.1,fd10::1 1.1.1.1,fe80::1%eth0\n")
    assert net.name == "pdnet1" and not net.internal
    assert net.listen_ips == ("10.89.0.1", "fd10::1")
    assert net.dns_servers == ("1.1.1.1", "fe80::1%eth0")
    assert net.containers == ()


def test_container_lines_all_shapes() -> None:
    text = (
        "10.89.0.1\n"
        f"{ID} 10.89.0.2,10.89.0.4 fd10::2 Web1,WEB 8.8.8.8,1.1.1.1\n"
        "\n"
        "ABC 10.89.0.3  db\n"  # empty v6 (two spaces), upper-case id
        "def  fd10::5 v6only\n"
    )
    net = parse_network("n", text)
    c1, c2, c3 = net.containers
    assert c1.v4 == ("10.89.0.2", "10.89.0.4") and c1.v6 == ("fd10::2",)
    assert c1.names == ("web1", "web") and c1.dns_servers == ("8.8.8.8", "1.1.1.1")
    assert c2.id == "abc" and c2.v6 == () and c2.dns_servers == ()
    assert c3.v4 == () and c3.v6 == ("fd10::5",)


def test_ipv6_is_canonicalised_like_a_socket_source() -> None:
    net = parse_network("n", "FD10:0::1\nx  fd10:0:0::0002 a\n")
    assert net.listen_ips == ("fd10::1",) and net.containers[0].v6 == ("fd10::2",)


def test_internal_suffix() -> None:
    net = parse_network("secret%int", "10.89.0.1\n")
    assert net.name == "secret" and net.internal


@pytest.mark.parametrize("text, msg", [
    ("", "empty"),
    ("nope\n", "listen"),
    ("10.89.0.1 1.1.1.1 extra\n", "too many"),
    ("10.89.0.1\nid 10.89.0.2 name\n", "too few"),
    ("10.89.0.1\nid fd10::2  name\n", "not IPv4"),
    ("10.89.0.1\nid  10.89.0.2 name\n", "not IPv6"),
    ("10.89.0.1\nid 10.89.0.2  a,,b\n", "empty name"),
    ("10.89.0.1\nid 10.89.0.2  a bad-dns\n", "dns server"),
])
def test_bad_files(text: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        parse_network("n", text)


def test_load_dir_skips_bad_files_pid_and_dotfiles(tmp_path: Path) -> None:
    (tmp_path / "good").write_text("10.89.0.1\nid 10.89.0.2  a\n")
    (tmp_path / "bad").write_text("10.89.0.1\ngarbage\n")
    (tmp_path / "aardvark.pid").write_text("123")
    (tmp_path / ".good.tmp").write_text("junk")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    (tmp_path / "subdir").mkdir()
    loaded = load_dir(str(tmp_path))
    assert [n.name for n in loaded.networks] == ["good"]
    assert len(loaded.errors) == 2
    assert any("bad" in e and "line 2" in e for e in loaded.errors)
