"""A reload applies only what changed: the file reader parses only changed files (only the new
lines of a file that grew), and `table.update` gives exactly what building from scratch gives."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from netns.dns import table
from netns.dns.config import Network, parse_network
from netns.dns.files import ConfigFiles


def _line(i: int, net: int, dns: str = "") -> str:
    return f"{i:064x} 10.{net}.0.{i + 2}  c{i},a{i}" + (f" {dns}" if dns else "")


def test_a_grown_file_costs_its_new_lines_and_others_are_not_read(tmp_path: Path) -> None:
    for n in range(5):
        (tmp_path / f"net{n}").write_text("\n".join([f"10.{n}.0.1"] + [
            _line(i, n) for i in range(20)]) + "\n")
    files = ConfigFiles(str(tmp_path))
    first = files.read()
    assert (files.files_read, files.lines_parsed) == (5, 105)
    with open(tmp_path / "net2", "a") as f:  # as the engine adds a container
        f.write(_line(99, 2) + "\n")
    second = files.read()
    assert (files.files_read, files.lines_parsed) == (6, 106)
    assert all(second[f"net{n}"] is first[f"net{n}"] for n in (0, 1, 3, 4))
    assert second["net2"] == parse_network("net2", (tmp_path / "net2").read_text())
    tmp = tmp_path / ".net3.tmp"  # as the engine removes one: a rewrite and a rename
    tmp.write_text("\n".join(["10.3.0.1"] + [_line(i, 3) for i in range(1, 20)]) + "\n")
    tmp.replace(tmp_path / "net3")
    third = files.read()
    assert (files.files_read, files.lines_parsed) == (7, 106)  # read, but no line parsed
    assert files.shrunk == {"net3": (first["net3"], 0, 1)}
    assert [c.names[0] for c in third["net3"].containers] == [f"c{i}" for i in range(1, 20)]
    assert files.read() == third and files.files_read == 7  # nothing changed: nothing read


def test_a_bad_appended_line_skips_the_file_as_a_full_parse_would(tmp_path: Path) -> None:
    path = tmp_path / "n"
    path.write_text("10.0.0.1\n" + _line(1, 0) + "\n")
    files = ConfigFiles(str(tmp_path))
    assert "n" in files.read()
    with open(path, "a") as f:
        f.write("broken\n")
    assert files.read() == {}
    path.write_text("10.0.0.1\n" + _line(2, 0) + "\n")
    assert [c.id for c in files.read()["n"].containers] == [f"{2:064x}"]
    os.unlink(path)
    assert files.read() == {}


def _net(name: str, k: int, ids: list[int], dns: str, internal: bool) -> Network:
    head = f"10.{k}.0.1" + (" 9.9.9.9" if dns == "net" else "")
    lines = [_line(i, k, "8.8.8.8" if dns == "ctr" and i % 2 else "") for i in ids]
    return parse_network(name + ("%int" if internal else ""), "\n".join([head, *lines]) + "\n")


def _same(a: table.Table, b: table.Table, sources: list[str]) -> None:
    assert a.networks == b.networks
    assert set(a.by_listen) == set(b.by_listen)
    for ip in sources:
        sa, sb = a.scope_of(ip), b.scope_of(ip)
        assert (sa is None) == (sb is None), ip
        if sa is not None and sb is not None:
            assert (sa.view.names, sa.view.reverse, sa.upstreams, sa.may_forward) == (
                sb.view.names, sb.view.reverse, sb.upstreams, sb.may_forward), ip
    for ip in a.by_listen:
        sa, sb = a.by_listen[ip], b.by_listen[ip]
        assert (sa.view.names, sa.upstreams, sa.may_forward) == (
            sb.view.names, sb.upstreams, sb.may_forward)


NETWORK = st.tuples(st.lists(st.integers(0, 12), max_size=6), st.sampled_from(["", "net", "ctr"]),
                    st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.none() | NETWORK | st.just("grow")),
                min_size=1, max_size=8))
def test_update_equals_a_build_from_scratch(steps: list[tuple[int, object]]) -> None:
    """Containers share ids across networks (a container on several of them), networks come,
    change, grow by appended lines and go; after every step the incrementally updated table
    answers every source exactly as a table built from all current networks."""
    current: dict[str, Network] = {}
    tbl = table.EMPTY
    sources = [f"10.{k}.0.{i + 2}" for k in range(4) for i in range(13)] + ["192.0.2.1"]
    for k, change in steps:
        name = f"n{k}"
        old = current.get(name)
        if change is None:
            current.pop(name, None)
        elif change == "grow":
            if old is None:
                continue
            extra = parse_network("x", f"10.{k}.0.1\n{_line(len(old.containers) + 20, k)}\n")
            current[name] = Network(old.name, old.internal, old.listen_ips, old.dns_servers,
                                    old.containers + extra.containers)
            if k % 2:  # the file reader's word for it (else update compares the lists)
                tbl = table.update(tbl, {name: current[name]}, {name: (old, extra.containers)})
                _same(tbl, table.build(current[n] for n in sorted(current)), sources)
                continue
        else:
            assert isinstance(change, tuple)
            ids, dns, internal = change
            current[name] = _net(name, k, ids, dns, internal)
        tbl = table.update(tbl, {name: current.get(name)})
        _same(tbl, table.build(current[n] for n in sorted(current)), sources)


def _counts(files: ConfigFiles) -> tuple[int, int, int]:
    return files.files_read, files.bytes_read, files.lines_parsed


def test_a_grown_file_is_read_from_where_it_was_left(tmp_path: Path) -> None:
    """Issue 15: a setup's reload reads the one new line of its network's file, not the 500
    entries before it (nor any other network's file)."""
    def wide(i: int) -> str:
        return f"{i:064x} 10.0.{i // 250}.{i % 250 + 2}  c{i},a{i}"

    big = "\n".join(["10.0.0.1"] + [wide(i) for i in range(500)]) + "\n"
    (tmp_path / "big").write_text(big)
    (tmp_path / "other").write_text("10.1.0.1\n" + _line(1, 1) + "\n")
    files = ConfigFiles(str(tmp_path))
    first = files.read()
    before = _counts(files)
    assert before == (2, len(big) + len(_line(1, 1)) + 10, 503)
    new = wide(777) + "\n"
    with open(tmp_path / "big", "a") as f:
        f.write(new)
    second = files.read()
    read, nbytes, parsed = (a - b for a, b in zip(_counts(files), before, strict=True))
    assert (read, parsed) == (1, 1)
    assert nbytes <= len(new) + len("10.0.0.1\n") + 64  # the new line, the header, the anchor
    assert second["other"] is first["other"]
    assert second["big"] == parse_network("big", big + new)
    with open(tmp_path / "big", "a") as f:  # and again from there, errors numbered as a whole
        f.write("too few\n")
    assert files.read() == {"other": first["other"]}


def _rewrite_in_place(path: Path, text: str) -> None:
    """As netavark edits a file (remove a container, change the header): same inode."""
    ino = path.stat().st_ino
    with open(path, "r+") as f:
        f.write(text)
        f.truncate()
    assert path.stat().st_ino == ino


def test_an_in_place_rewrite_that_grows_is_read_whole(tmp_path: Path) -> None:
    """The incremental read must never keep stale records: a file rewritten in place that
    came out longer (a new header with DNS servers; a container removed and two added before
    the server looked) is parsed whole, giving exactly what a fresh read gives."""
    path = tmp_path / "n"
    lines = [_line(i, 0) for i in range(100)]
    path.write_text("\n".join(["10.0.0.1", *lines]) + "\n")
    files = ConfigFiles(str(tmp_path))
    files.read()
    steps = [
        ["10.0.0.1 9.9.9.9,8.8.8.8", *lines],  # network DNS servers added
        ["10.0.0.1 9.9.9.9,8.8.8.8", *lines[:60], *lines[61:], _line(200, 0), _line(201, 0)],
        ["10.0.0.1 9.9.9.9,8.8.8.8", *lines[1:], _line(202, 0), _line(203, 0), _line(204, 0)],
    ]
    for step in steps:
        text = "\n".join(step) + "\n"
        _rewrite_in_place(path, text)
        before = files.lines_parsed
        assert files.read()["n"] == parse_network("n", text)
        assert files.lines_parsed - before == len(step)  # whole


def test_a_grown_network_leaves_every_other_networks_entries_alone(tmp_path: Path) -> None:
    """Issue 15: a setup's reload with 5,000 names across 50 networks. The one network that
    grew is extended in place; nothing of the other 49 is copied or rebuilt: the per-container
    lookup dicts are the same objects, updated in place, and the other networks' views and
    scopes are the very objects they were."""
    for n in range(50):
        (tmp_path / f"net{n}").write_text("\n".join([f"10.{n}.0.1"] + [
            f"{n:032x}{i:032x} 10.{n}.{i // 250}.{i % 250 + 2}  n{n}c{i}" for i in range(100)]) + "\n")
    files = ConfigFiles(str(tmp_path))
    tbl = table.build(files.read().values())
    by_source, owners, index = tbl.by_source, tbl.owners, tbl.index
    views = {n: tbl.views[frozenset((f"net{n}",))] for n in range(50)}
    scopes = {n: tbl.scope_of(f"10.{n}.0.2") for n in range(50)}
    with open(tmp_path / "net7", "a") as f:
        f.write(f"{'f' * 64} 10.7.9.9  newone\n")
    nets = files.read()
    changed = {k: v for k, v in nets.items() if v is not tbl.nets.get(k)}
    assert list(changed) == ["net7"] and files.grown["net7"][0] is tbl.nets["net7"]
    new = table.update(tbl, changed, files.grown)
    assert new.by_source is by_source and new.owners is owners and new.index is index
    assert new.views[frozenset(("net7",))] is views[7]  # extended, not merged again
    assert new.scope("10.7.0.2", "10.7.0.1").view.names["newone"] == (("10.7.9.9",), ())
    assert new.scope_of("10.7.9.9") is new.scope_of("10.7.0.2")
    for n in (0, 6, 8, 49):
        assert new.views[frozenset((f"net{n}",))] is views[n]
        assert new.scope_of(f"10.{n}.0.2") is scopes[n]
    _same(new, table.build(nets.values()), [f"10.{n}.0.{i}" for n in range(50) for i in (2, 3)]
          + ["10.7.9.9"])
