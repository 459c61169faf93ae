"""The Aardvark config format, read and written here only (the 1.4 form and the newest `%int`
form): burrow-dns parses it, the engine (netns/aardvark.py) writes it.

One file per network, named after the network. Line 1 is `listen_ip[,listen_ip] [dns,dns]`;
every other non-empty line is `ctr_id v4[,v4]|"" v6[,v6]|"" name[,alias...] [dns,dns]`, fields
separated by single spaces (so an empty v4 or v6 list is two spaces in a row). A `%int` suffix
on the file name marks an internal network, which must never forward.

A bad file is reported and skipped: one broken network must not take the others down
(aardvark 1.4 aborted the whole load, spec §2.1 bug 3). The writer refuses any field that would
change the shape of a file (a space, comma, newline or control character in a name: issue 12
item 5 injected a record with a newline in a container name) and any network name that is not
a plain file name, so what is written always parses back to the same records.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

from netns import statefiles

PID_FILE = statefiles.AARDVARK_PID
INTERNAL_SUFFIX = "%int"
_NOT_IN_A_FIELD = frozenset(" ,\x7f") | frozenset(map(chr, range(32)))


class ConfigError(Exception):
    """A network file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Container:
    id: str
    v4: tuple[str, ...]
    v6: tuple[str, ...]
    names: tuple[str, ...]  # lower-cased; the first is the container name, the rest aliases
    dns_servers: tuple[str, ...]


@dataclass(frozen=True)
class Network:
    name: str
    internal: bool
    listen_ips: tuple[str, ...]
    dns_servers: tuple[str, ...]
    containers: tuple[Container, ...]


@dataclass(frozen=True)
class Loaded:
    networks: tuple[Network, ...]
    errors: tuple[str, ...]  # one message per skipped file


def _ips(field: str, version: int | None, what: str) -> tuple[str, ...]:
    """Comma-separated IPs in canonical text (the form the kernel reports as a source)."""
    if not field:
        return ()
    out: list[str] = []
    for item in field.split(","):
        try:
            ip = ipaddress.ip_address(item)
        except ValueError:
            raise ConfigError(f"invalid {what} address {item!r}") from None
        if version is not None and ip.version != version:
            raise ConfigError(f"invalid {what} address {item!r}: not IPv{version}")
        out.append(str(ip))
    return tuple(out)


def _servers(field: str) -> tuple[str, ...]:
    """Upstream servers; link-local IPv6 may carry a `%zone`, which is kept for connect()."""
    out: list[str] = []
    for item in field.split(",") if field else ():
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ConfigError(f"invalid dns server {item!r}") from None
        out.append(item)
    return tuple(out)


def parse_network(filename: str, text: str) -> Network:
    internal = filename.endswith(INTERNAL_SUFFIX)
    name = filename[: -len(INTERNAL_SUFFIX)] if internal else filename
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise ConfigError("empty file: missing the listen address line")
    where, header = numbered[0]
    try:
        head = header.split(" ")
        if len(head) > 2:
            raise ConfigError("too many fields in the listen address line")
        listen = _ips(head[0], None, "listen")
        if not listen:
            raise ConfigError("no listen address")
        net_dns = _servers(head[1]) if len(head) == 2 else ()
        containers: list[Container] = []
        for where, line in numbered[1:]:  # noqa: B007 (`where` names the bad line below)
            containers.append(_parse_container(line))
    except ConfigError as exc:
        raise ConfigError(f"line {where}: {exc}") from None
    return Network(name, internal, listen, net_dns, tuple(containers))


def extend_network(net: Network, text: str, first_line: int) -> Network:
    """`net` with the container lines of `text` (lines appended to its file, the first being
    line `first_line`) added: what a reload parses when a file only grew."""
    containers = list(net.containers)
    for i, line in enumerate(text.split("\n")):
        line = line.rstrip("\r")
        if line.strip():
            try:
                containers.append(_parse_container(line))
            except ConfigError as exc:
                raise ConfigError(f"line {first_line + i}: {exc}") from None
    return Network(net.name, net.internal, net.listen_ips, net.dns_servers, tuple(containers))


# A rewritten file (the engine's teardown removes a line and renames a new file in) is parsed
# whole, and most of that cost is the address checks of lines parsed before: remembering each
# line's (immutable) Container made a reload after one teardown at 500 names 2.6x cheaper (9.6 -> 3.7 ms).
# Bounded: the lines are the engine's own config, and a cache miss only costs a parse.
@functools.lru_cache(maxsize=16384)
def _parse_container(line: str) -> Container:
    fields = line.split(" ")
    if len(fields) < 4:
        raise ConfigError("improperly formatted - too few entries")
    ctr_id, v4, v6, names = fields[:4]
    if not ctr_id:
        raise ConfigError("empty container id")
    name_list = tuple(n.lower() for n in names.split(","))
    if not all(name_list):
        raise ConfigError(f"empty name in {names!r}")
    dns = _servers(fields[4]) if len(fields) >= 5 else ()
    return Container(ctr_id.lower(), _ips(v4, 4, "ipv4"), _ips(v6, 6, "ipv6"), name_list, dns)


# -- writing ----------------------------------------------------------------------------------
def _field(value: str, what: str) -> str:
    if not value:
        raise ConfigError(f"empty {what}")
    bad = _NOT_IN_A_FIELD.intersection(value)
    if bad:
        raise ConfigError(f"{what} {value!r} contains {''.join(sorted(bad))!r}, "
                          "which the DNS config format cannot hold")
    return value


def filename(network: str, internal: bool) -> str:
    """The file of a network: its name, plus `%int` when internal. Raises ConfigError for a
    name that is not a plain file name the reader would take back as this network."""
    _field(network, "network name")
    if "/" in network or network.startswith(".") or network == PID_FILE or "%" in network:
        raise ConfigError(f"network name {network!r} cannot be a DNS config file name")
    return network + INTERNAL_SUFFIX if internal else network


def format_header(listen_ips: Sequence[str], dns_servers: Sequence[str]) -> str:
    """Line 1: `listen_ip[,listen_ip] [dns,dns]`."""
    listen = ",".join(_ips(",".join(_field(ip, "listen address") for ip in listen_ips), None,
                           "listen"))
    if not listen:
        raise ConfigError("no listen address")
    servers = ",".join(_servers(",".join(_field(s, "dns server") for s in dns_servers)))
    return f"{listen} {servers}" if servers else listen


def format_container(ctr: Container) -> str:
    """`ctr_id v4[,v4] v6[,v6] name[,alias...] [dns,dns]` (an empty IP list is an empty field)."""
    fields = [
        _field(ctr.id, "container id"),
        ",".join(_ips(",".join(_field(ip, "ipv4 address") for ip in ctr.v4), 4, "ipv4")),
        ",".join(_ips(",".join(_field(ip, "ipv6 address") for ip in ctr.v6), 6, "ipv6")),
        ",".join(_field(n, "name") for n in ctr.names),
    ]
    if not ctr.names:
        raise ConfigError(f"container {ctr.id}: no name")
    if ctr.dns_servers:
        fields.append(",".join(_servers(",".join(_field(s, "dns server") for s in ctr.dns_servers))))
    return " ".join(fields)


def header_of(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The listen addresses and network DNS servers of a file's text."""
    net = parse_network("n", text.split("\n", 1)[0] + "\n")
    return net.listen_ips, net.dns_servers


def container_id_of(line: str) -> str:
    """The container id a record line belongs to ('' for a blank line), as the reader sees it."""
    return line.split(" ", 1)[0].lower()


# What str.splitlines() breaks an ASCII text at besides "\n": a file holding none of them (all
# burrow and netavark write) splits into the same lines on b"\n" alone.
_OTHER_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")


def without(raw: bytes, container_id: str) -> str | None:
    """A network file's text with every record line of `container_id` removed (the header,
    line 1, always stays); None when no more than that one line is left (the file goes).
    Raises ValueError for text that is not UTF-8. The common file (ASCII, "\n" breaks only)
    is cut with bytes.find, not split into lines in Python: a teardown's cost must not grow
    by a Python loop over every container on the network."""
    ctr = container_id.lower()
    plain = ctr.isascii() and ctr.isprintable() and " " not in ctr  # a whole first field
    if not (ctr and plain and raw.isascii()) or any(b in raw for b in _OTHER_BREAKS):
        lines = raw.decode().splitlines()
        kept = [ln for i, ln in enumerate(lines) if i == 0 or container_id_of(ln) != ctr]
        return "\n".join(kept) + "\n" if len(kept) > 1 else None
    key, low = b"\n" + ctr.encode(), raw.lower()  # same length: ASCII only
    parts, at = [], 0
    pos = low.find(key)
    while pos >= 0:
        end = pos + len(key)
        if end == len(low) or low[end] in b" \n":  # the line's first field is exactly the id
            stop = raw.find(b"\n", end)
            parts.append(raw[at: pos + 1])
            at = len(raw) if stop < 0 else stop + 1
        pos = low.find(key, max(end, at - 1))
    parts.append(raw[at:])
    out = b"".join(parts)
    if out and not out.endswith(b"\n"):
        out += b"\n"
    return out.decode() if out.find(b"\n", out.find(b"\n") + 1) >= 0 else None  # 2+ lines


def is_network_file(name: str) -> bool:
    return name != PID_FILE and not name.startswith(".")  # dotfiles: temp files, stats


def load_dir(path: str) -> Loaded:
    """Every regular file but the pid file is a network. Raises OSError if the dir is unreadable."""
    networks: list[Network] = []
    errors: list[str] = []
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if not is_network_file(entry.name):
            continue
        try:
            if not entry.is_file():
                continue
            with open(entry.path, "rb") as f:
                text = f.read().decode("utf-8")
            networks.append(parse_network(entry.name, text))
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            errors.append(f"skipping network config {entry.path}: {exc}")
    return Loaded(tuple(networks), tuple(errors))
