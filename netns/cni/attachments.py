"""What an ADD asked for beyond addresses (published ports, DNS name), kept until its DEL.

A runtime that lost its cache (or GC, which gets only ids) sends DEL without runtimeConfig,
yet the port DNAT rules and DNS entries of that ADD must still go. One small JSON file per
(network, container id, ifname) under `<stateDir>/cni-attachments/<network>/`.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from netns import statefiles
from netns.cni import errors as E
from netns.cni.errors import CniError
from netns.schema import IPAddress, PortMapping


@dataclass(frozen=True)
class Record:
    name: str
    ports: tuple[PortMapping, ...]
    # The addresses the ADD reserved, so that DEL reads their files alone; None until the ADD
    # knows them (the record is written before any is reserved): DEL then looks at every file.
    ips: tuple[IPAddress, ...] | None = None


def _path(state_dir: str, network: str, cid: str, ifname: str) -> Path:
    # cid and ifname were checked (spec charset, no "/"): safe as one file name.
    return Path(state_dir) / statefiles.CNI_ATTACHMENTS_DIR / network / f"{cid}_{ifname}.json"


def save(state_dir: str, network: str, cid: str, ifname: str, rec: Record) -> None:
    path = _path(state_dir, network, cid, ifname)
    data: dict[str, object] = {"name": rec.name, "ports": [p.to_json() for p in rec.ports]}
    if rec.ips is not None:
        data["ips"] = [str(ip) for ip in rec.ips]
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        statefiles.replace_text(path, json.dumps(data))
    except OSError as exc:
        raise CniError(E.IO_FAILURE, f"save attachment {path}: {exc.strerror or exc}") from None


def load(state_dir: str, network: str, cid: str, ifname: str) -> Record | None:
    """The saved record; None when absent or unreadable (DEL then does what it can without)."""
    try:
        data = json.loads(statefiles.read_text(_path(state_dir, network, cid, ifname)))
        return Record(str(data["name"]), tuple(PortMapping.from_json(p) for p in data["ports"]),
                      _ips(data.get("ips")))
    except (OSError, ValueError, KeyError, TypeError, Exception):
        return None


def _ips(raw: object) -> tuple[IPAddress, ...] | None:
    """The record's addresses; None (DEL looks at every file) if absent or not a list of them."""
    if not isinstance(raw, list):
        return None
    try:
        return tuple(ipaddress.ip_address(ip) for ip in raw if isinstance(ip, str)) \
            if all(isinstance(ip, str) for ip in raw) else None
    except ValueError:
        return None


def remove(state_dir: str, network: str, cid: str, ifname: str) -> None:
    try:
        _path(state_dir, network, cid, ifname).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CniError(E.IO_FAILURE, f"remove attachment record: {exc.strerror or exc}") from None
