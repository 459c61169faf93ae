"""resolv.conf parsing and re-reading, question walking."""

from __future__ import annotations

import os
from pathlib import Path

import dns.message

from netns.dns.upstream import HostResolvers, parse_resolv_conf, question_end


def test_parse_resolv_conf_max_three_and_zones() -> None:
    text = ("# c\nsearch x\nnameserver 10.0.0.1\nnameserver bogus\nnameserver fe80::1%eth0\n"
            "nameserver ::1\nnameserver 10.0.0.9\n")
    assert parse_resolv_conf(text) == ("10.0.0.1", "fe80::1%eth0", "::1")


def test_host_resolvers_reread_on_change(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    h = HostResolvers(str(f))
    assert h.servers() == ()
    f.write_text("nameserver 10.0.0.1\n")
    assert h.servers() == ("10.0.0.1",)
    tmp = tmp_path / "new"
    tmp.write_text("nameserver 10.0.0.2\n")
    os.replace(tmp, f)  # how resolvconf/systemd replace it: a new inode
    assert h.servers() == ("10.0.0.2",)


def test_question_end() -> None:
    wire = dns.message.make_query("a.example.com", "A", use_edns=0).to_wire()
    end = question_end(wire)
    assert wire[end - 4 : end] == b"\x00\x01\x00\x01"
    assert question_end(b"\x00" * 12) == 12  # no question at all
    assert question_end(b"\x00" * 12 + b"\xc0\x0c") == 12
