"""Aardvark config files: the 1.4 and newest forms, and bad files skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from netns.aardvark import AardvarkConfig, Entry
from netns.dns.config import (
    ConfigError,
    Container,
    container_id_of,
    filename,
    format_container,
    format_header,
    header_of,
    load_dir,
    parse_network,
)
from netns.errors import BurrowError

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


# -- the writer side: one module owns the format, and what it writes reads back -------------------
def test_written_lines_parse_back_to_the_same_records() -> None:
    ctr = Container("ab12", ("10.89.0.2",), ("fd10::2",), ("web1", "web"), ("1.1.1.1",))
    v6only = Container("cd34", (), ("fd10::3",), ("db",), ())
    text = "\n".join([format_header(["10.89.0.1", "fd10::1"], ["9.9.9.9", "fe80::1%eth0"]),
                      format_container(ctr), format_container(v6only)]) + "\n"
    net = parse_network(filename("pd", internal=True), text)
    assert net.name == "pd" and net.internal
    assert net.listen_ips == ("10.89.0.1", "fd10::1")
    assert net.dns_servers == ("9.9.9.9", "fe80::1%eth0")
    assert net.containers == (ctr, v6only)
    assert header_of(text) == (net.listen_ips, net.dns_servers)
    assert container_id_of(format_container(ctr)) == "ab12"


@pytest.mark.parametrize("ctr, msg", [
    (Container("id", ("10.0.0.2",), (), ("web\n99 10.0.0.66  evil",), ()), "name"),
    (Container("id", ("10.0.0.2",), (), ("a b",), ()), "name"),
    (Container("id", ("10.0.0.2",), (), ("a,b",), ()), "name"),
    (Container("id", ("10.0.0.2",), (), (), ()), "no name"),
    (Container("i d", ("10.0.0.2",), (), ("a",), ()), "container id"),
    (Container("id", ("fd00::2",), (), ("a",), ()), "not IPv4"),
    (Container("id", ("10.0.0.2\n",), (), ("a",), ()), "ipv4"),
    (Container("id", ("10.0.0.2",), (), ("a",), ("8.8.8.8 x",)), "dns server"),
])
def test_writer_refuses_fields_that_would_change_the_file(ctr: Container, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        format_container(ctr)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "aardvark.pid", "x%int",
                                  "new\nline"])
def test_network_names_that_are_not_plain_file_names(name: str) -> None:
    with pytest.raises(ConfigError):
        filename(name, internal=False)


def entry(**kw: object) -> Entry:
    base: dict[str, object] = dict(
        network="net1", internal=False, listen_ips=("10.89.0.1",), network_dns=(),
        container_id="ab" * 32, ipv4=("10.89.0.2",), ipv6=(), names=("web",), container_dns=())
    return Entry(**{**base, **kw})  # type: ignore[arg-type]


def test_engine_writer_validates_every_entry_before_writing_any(tmp_path: Path) -> None:
    """Issue 12 item 5: a newline in a container name injected a record; `../` escaped."""
    dns = AardvarkConfig(tmp_path, "/nonexistent/burrow-dns", 53)
    good = entry()
    with pytest.raises(BurrowError, match="name"):
        dns.add([good, entry(names=("web\n" + "ff" * 32 + " 10.89.0.66  evil",))])
    with pytest.raises(BurrowError, match="network"):
        dns.add([entry(network="../escape")])
    with pytest.raises(BurrowError):
        dns.update_dns("../../etc/x", ["1.1.1.1"])
    assert not list(dns.dir.iterdir()) and not (tmp_path / "escape").exists()
    dns.add([good, entry(container_id="cd" * 32, ipv4=("10.89.0.3",), names=("db", "DB2"))])
    dns.update_dns("net1", ["9.9.9.9"])
    dns.remove("ab" * 32, [("net1", False)])
    net = load_dir(str(dns.dir)).networks[0]
    assert net.dns_servers == ("9.9.9.9",)
    assert [(c.id, c.names) for c in net.containers] == [("cd" * 32, ("db", "db2"))]


def test_starting_a_dns_server_drops_a_dead_burrow_dns_stats_file(tmp_path: Path) -> None:
    """aardvark-dns 1.4 reads every file but its pid file as a network, dotfiles included."""
    seen = tmp_path / "seen"
    fake = tmp_path / "fake-aardvark"
    fake.write_text(f"#!/bin/sh\nls -A \"$2\" > {seen}\n")
    fake.chmod(0o755)
    dns = AardvarkConfig(tmp_path, str(fake), 53)
    dns.add([entry()])
    (dns.dir / ".burrow-dns-stats.json").write_text("{}")  # left by a burrow-dns killed -9
    dns.notify(start=True)
    assert seen.read_text().split() == ["net1"]
