"""Issue 15: a teardown's DNS update does not grow with the containers on the network.

The engine cuts the container's line out of the network file with bytes.find (`config.without`)
instead of a Python loop over every line; burrow-dns sees that the new file is the old one
without one run of whole lines (`files.removed_run`, memcmp in O(log n) steps), parses nothing,
and `table.update` takes those containers out of the network's view and lookup dicts in place.
Each of these must give exactly what the line-by-line way gives: the same file text, the same
parsed network, the same answers for every source."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from netns.dns import table
from netns.dns.config import Network, container_id_of, parse_network, without
from netns.dns.files import ConfigFiles, removed_run


def _cut_line_by_line(raw: bytes, container_id: str) -> str | None:
    """What the engine did before (and does for any file the fast path does not take)."""
    lines = raw.decode().splitlines()
    ctr = container_id.lower()
    kept = [ln for i, ln in enumerate(lines) if i == 0 or container_id_of(ln) != ctr]
    return "\n".join(kept) + "\n" if len(kept) > 1 else None


PIECES = ["ab", "AB", "abc", "a", " ", " x", "\n", "\n", "\n", "\r", "\r\n", "\x0b", "é", "1.2.3.4"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=16),
       st.sampled_from(["ab", "Ab", "a", "abc", "", "a b", "x", "é", "a\n"]))
def test_without_cuts_exactly_what_the_line_by_line_cut_did(pieces: list[str], ctr: str) -> None:
    """Ids that are a prefix of another id, upper case, blank lines, a last line with no
    newline, a header only, other line breaks (\\r, \\v) and non-ASCII text: the same text out,
    and the file goes in the same cases."""
    raw = "".join(pieces).encode()
    assert without(raw, ctr) == _cut_line_by_line(raw, ctr)


def test_without_on_a_network_file() -> None:
    ids = [f"{i:064x}" for i in range(5)]
    raw = ("10.0.0.1 9.9.9.9\n" + "".join(f"{c} 10.0.0.{i + 2}  c{i},web\n" for i, c in enumerate(ids))).encode()
    assert without(raw, ids[2].upper()) == raw.decode().replace(f"{ids[2]} 10.0.0.4  c2,web\n", "")
    assert without(raw, ids[2][:10]) == raw.decode()  # a prefix of an id is not that id
    one = f"10.0.0.1\n{ids[0]} 10.0.0.2  c0\n".encode()
    assert without(one, ids[0]) is None  # only the header left: the file goes


LINES = st.lists(st.sampled_from(["a 1", "a 10", "a 1 x", "b 2", "b 2", "c"]), max_size=10)


@settings(max_examples=300, deadline=None)
@given(LINES, st.integers(0, 10), st.integers(0, 4),
       st.sampled_from(["run", "two", "edit", "header", "append", "same"]))
def test_removed_run_is_exactly_a_run_of_whole_lines(lines: list[str], at: int, count: int,
                                                      how: str) -> None:
    """Lines that share prefixes and repeat: whenever `removed_run` answers, the old file with
    that span cut out is byte for byte the new one, and the span is whole lines after the
    header; when the new file was made by cutting a run of lines, it always answers."""
    old_lines = ["10.0.0.1", *lines]
    at = 1 + at % len(old_lines)
    new_lines = list(old_lines)
    if how == "run":
        del new_lines[at: at + max(count, 1)]
    elif how == "two":
        del new_lines[at + 2: at + 3]
        del new_lines[at: at + 1]
    elif how == "edit":
        new_lines[at: at + 1] = ["a 1 y"]
    elif how == "header":
        new_lines[0] = "10.0.0.9"
        del new_lines[at: at + 1]
    elif how == "append":
        new_lines.append("d")
    old, new = ("".join(ln + "\n" for ln in ls).encode() for ls in (old_lines, new_lines))
    head = len(old_lines[0]) + 1
    span = removed_run(old, new, head)
    if span is not None:
        p, q = span
        assert old[:p] + old[q:] == new
        assert head <= p < q and old[p - 1: p] == b"\n" and old[q - 1: q] == b"\n"
    if how == "run" and new != old:
        assert span is not None


def _wide(i: int, net: int = 0) -> str:
    return f"{net:032x}{i:032x} 10.{net}.{i // 250}.{i % 250 + 2}  c{i},a{i},web"


def _write(path: Path, lines: list[str], *, rename: bool = True) -> None:
    text = "\n".join(lines) + "\n"
    if not rename:  # as netavark rewrites a file: in place, same inode
        with open(path, "r+") as f:
            f.write(text)
            f.truncate()
        return
    tmp = path.parent / f".{path.name}.tmp"  # as the engine does: a new file renamed over
    tmp.write_text(text)
    tmp.replace(path)


def test_a_teardown_rewrite_is_read_but_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big"
    lines = ["10.0.0.1", *(_wide(i) for i in range(500))]
    _write(path, lines)
    files = ConfigFiles(str(tmp_path))
    first = files.read()["big"]
    parsed = files.lines_parsed
    for cut, rename in ((250, True), (1, False), (-1, True)):  # middle, first, last
        cut = cut % len(lines)
        before = files.read()["big"]
        del lines[cut]
        _write(path, lines, rename=rename)
        net = files.read()["big"]
        assert files.lines_parsed == parsed, cut  # not one line parsed
        assert files.shrunk == {"big": (before, cut - 1, cut)}
        assert net == parse_network("big", path.read_text())
    assert first.containers[1:249] + first.containers[250:499] == net.containers


def test_other_rewrites_are_parsed_whole(tmp_path: Path) -> None:
    """Two lines gone at once (two teardowns before one reload), a blank line in the file, a
    new header: parsed whole, as before. The same bytes written again: nothing to parse, the
    very same network."""
    path = tmp_path / "n"
    lines = ["10.0.0.1", *(_wide(i) for i in range(50))]
    _write(path, lines)
    files = ConfigFiles(str(tmp_path))
    files.read()
    steps = [
        [*lines[:10], *lines[11:30], *lines[31:]],
        ["10.0.0.1", "", *lines[1:20], *lines[21:]],
        ["10.0.0.1", "", *lines[1:19], *lines[21:]],  # one run gone, but the file has a blank
        ["10.0.0.1 9.9.9.9", *lines[2:]],
    ]
    for step in steps:
        _write(path, step)
        before = files.lines_parsed
        assert files.read()["n"] == parse_network("n", path.read_text())
        assert files.lines_parsed - before == len(step) and files.shrunk == {}
    net = files.read()["n"]
    _write(path, steps[-1])  # a new inode, the same text
    before = (files.files_read, files.lines_parsed)
    assert files.read()["n"] is net
    assert (files.files_read, files.lines_parsed) == (before[0] + 1, before[1])


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
        assert (sa.view.names, sa.view.reverse, sa.upstreams, sa.may_forward) == (
            sb.view.names, sb.view.reverse, sb.upstreams, sb.may_forward), ip


# A container line: id 0-5, an alias or not (another container's name, even), its name twice
# or not, its address once or twice. An address is its container's (one per network): which
# container a source address belongs to is the table's key, and two containers claiming one
# is test_an_address_two_lines_share_is_rebuilt_not_cut's case.
LINE = st.tuples(st.integers(0, 5), st.sampled_from(["", "web", "c0"]), st.booleans(),
                 st.booleans())


def _text(k: int, specs: list[tuple[int, str, bool, bool]]) -> str:
    out = [f"10.{k}.9.1"]
    for ctr, alias, twice, two_ips in specs:
        names = [f"c{ctr}", *([alias] if alias else []), *([f"c{ctr}"] if twice else [])]
        v4 = ",".join([f"10.{k}.0.{ctr + 2}"] * (1 + two_ips))
        out.append(f"{ctr:064x} {v4} fd0{k}::{ctr + 2} {','.join(names)}")
    return "\n".join(out) + "\n"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.lists(LINE, max_size=7), st.integers(0, 7),
                          st.integers(1, 3)), min_size=1, max_size=8))
def test_cuts_applied_in_place_equal_a_build_from_scratch(
        steps: list[tuple[int, list[tuple[int, str, bool, bool]], int, int]]) -> None:
    """Networks are written, then lose a run of lines with the file reader's word for it, as a
    teardown gives it; containers share ids across networks, have two lines in one network
    (of which the cut may take one), share an alias, list a name or an address twice. After every step the table answers
    every source exactly as one built from scratch (in place where that is exact, else by
    rebuilding the network)."""
    current: dict[str, Network] = {}
    tbl = table.EMPTY
    sources = [f"10.{k}.0.{i + 2}" for k in range(3) for i in range(6)] + [
        f"fd0{k}::{i + 2}" for k in range(3) for i in range(6)] + ["192.0.2.1"]
    for k, specs, start, length in steps:
        name = f"n{k}"
        old = current.get(name)
        if old is None or not old.containers:
            current[name] = parse_network(name, _text(k, specs))
            tbl = table.update(tbl, {name: current[name]})
        else:
            start %= len(old.containers)
            stop = min(start + length, len(old.containers))
            current[name] = Network(old.name, old.internal, old.listen_ips, old.dns_servers,
                                    old.containers[:start] + old.containers[stop:])
            tbl = table.update(tbl, {name: current[name]}, None, {name: (old, start, stop)})
        _same(tbl, table.build(current[n] for n in sorted(current)), sources)


def test_a_teardown_touches_only_what_the_container_had(tmp_path: Path) -> None:
    """5,000 names in 50 networks, one container goes: its network's view is changed in
    place, its addresses stop naming it, a shared alias loses just its address, and nothing of
    the other 49 networks (nor of its neighbours) is copied or rebuilt."""
    for n in range(50):
        _write(tmp_path / f"net{n}", [f"10.{n}.9.1", *(_wide(i, n) for i in range(100))])
    files = ConfigFiles(str(tmp_path))
    tbl = table.build(files.read().values())
    by_source, owners, index = tbl.by_source, tbl.owners, tbl.index
    views = {n: tbl.views[frozenset((f"net{n}",))] for n in range(50)}
    whos = {n: tbl.by_source[f"10.{n}.0.3"] for n in range(50)}
    gone = f"{7:032x}{40:032x}"
    _write(tmp_path / "net7", ["10.7.9.1", *(_wide(i, 7) for i in range(100) if i != 40)])
    nets = files.read()
    changed = {k: v for k, v in nets.items() if v is not tbl.nets.get(k)}
    assert list(changed) == ["net7"] and files.shrunk["net7"][0] is tbl.nets["net7"]
    new = table.update(tbl, changed, files.grown, files.shrunk)
    assert new.by_source is by_source and new.owners is owners and new.index is index
    assert new.views[frozenset(("net7",))] is views[7]  # cut in place
    assert "10.7.0.42" not in new.by_source and gone not in new.owners and gone not in index["net7"]
    view = new.scope("10.7.0.3", "10.7.9.1").view
    assert "c40" not in view.names and "a40" not in view.names and "10.7.0.42" not in view.reverse
    web = [f"10.7.0.{i + 2}" for i in range(100) if i != 40]
    assert view.names["web"] == (tuple(web), ())
    for n in range(50):
        assert new.by_source[f"10.{n}.0.3"] is whos[n]  # the neighbours keep their Who
    for n in (0, 6, 8, 49):
        assert new.views[frozenset((f"net{n}",))] is views[n]
    _same(new, table.build(nets.values()), [f"10.{n}.0.{i}" for n in range(50) for i in (2, 3)]
          + ["10.7.0.42"])


def test_an_address_two_lines_share_is_rebuilt_not_cut(tmp_path: Path) -> None:
    """Two containers with one address (a stale line, say): cutting one in place could not
    know whether the address stays, so the network is merged again, and stays correct."""
    lines = ["10.0.9.1", f"{1:064x} 10.0.0.2  one", f"{2:064x} 10.0.0.2  two",
             f"{3:064x} 10.0.0.3  three"]
    _write(tmp_path / "n", lines)
    files = ConfigFiles(str(tmp_path))
    tbl = table.build(files.read().values())
    old_view = tbl.views[frozenset(("n",))]
    _write(tmp_path / "n", [lines[0], *lines[2:]])
    nets = files.read()
    assert files.shrunk  # the reader saw a cut ...
    new = table.update(tbl, dict(nets), files.grown, files.shrunk)
    assert new.views[frozenset(("n",))] is not old_view  # ... the table merged it again
    scope = new.scope_of("10.0.0.2")
    assert scope is not None and scope.view.reverse["10.0.0.2"] == ("two",)
    assert "one" not in scope.view.names
    _same(new, table.build(nets.values()), ["10.0.0.2", "10.0.0.3"])
    os.unlink(tmp_path / "n")


def test_views_of_containers_on_two_networks_change_in_place_where_exact(tmp_path: Path) -> None:
    """Containers on networks a and b see the view of both (a's lines, then b's). A teardown
    on either cuts that view in place; a setup on b (last in name order) extends it in place,
    one on a cannot (its line would have to go before b's) and the view is merged again. Each
    time the answers are those of a table built from scratch."""
    def line(ctr: int, net: str) -> str:
        k = "ab".index(net)
        return f"{ctr:064x} 10.{k}.0.{ctr + 2}  c{ctr},web"

    both = list(range(5))
    files_a = ["10.0.9.1", *(line(i, "a") for i in both + list(range(10, 20)))]
    files_b = ["10.1.9.1", *(line(i, "b") for i in both + list(range(20, 30)))]
    _write(tmp_path / "a", files_a)
    _write(tmp_path / "b", files_b)
    files = ConfigFiles(str(tmp_path))
    tbl = table.build(files.read().values())
    key = frozenset(("a", "b"))
    sources = [f"10.{k}.0.{i + 2}" for k in (0, 1) for i in range(40)]

    def step(name: str, lines: list[str], in_place: bool) -> None:
        nonlocal tbl
        view = tbl.views[key]
        if lines[-1] not in (tmp_path / name).read_text():
            with open(tmp_path / name, "a") as f:  # a setup appends
                f.write(lines[-1] + "\n")
        else:
            _write(tmp_path / name, lines)
        nets = files.read()
        tbl = table.update(tbl, {k: v for k, v in nets.items() if v is not tbl.nets.get(k)},
                           files.grown, files.shrunk)
        assert (tbl.views[key] is view) == in_place, name
        _same(tbl, table.build(nets.values()), sources)

    step("b", [*files_b[:2], *files_b[3:]], True)  # container 1 leaves b
    step("a", [*files_a[:4], *files_a[5:]], True)  # container 3 leaves a
    step("b", [*files_b[:2], *files_b[3:], line(33, "b")], True)
    step("a", [*files_a[:4], *files_a[5:], line(33, "a")], False)
    scope = tbl.scope_of("10.1.0.35")
    assert scope is not None and scope.view is tbl.views[key]
