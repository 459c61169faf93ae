"""Firewall backends behind one Protocol (`types.Firewall`) and one factory, `select`.

The backend is chosen by the `--firewall-driver` flag, else env `NETAVARK_FW`, else nftables.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from netns.errors import BurrowError
from netns.firewall.iptables import IptablesFirewall
from netns.firewall.libnft import LibNftables
from netns.firewall.nfnl import Nfnl
from netns.firewall.nftables import NftablesFirewall
from netns.firewall.none import NoFirewall
from netns.firewall.runner import Runner, subprocess_runner
from netns.firewall.state import StateStore
from netns.firewall.types import Firewall, NetworkFw, PortFw
from netns.firewalld.trusted import TrustedZone

DEFAULT = "nftables"
CHOICES = ("nftables", "iptables", "firewalld", "none")
_TOOLS = {"nftables": ("nft",), "iptables": ("iptables-restore", "ip6tables-restore", "iptables-save")}


def select(
    name: str | None, config_dir: Path, env: Mapping[str, str], *,
    argv_prefix: Sequence[str] = (), runner: Runner = subprocess_runner,
) -> Firewall:
    """The firewall for this request.

    `argv_prefix` runs every firewall exec through a wrapper (e.g. `nsenter -t PID -n --`);
    `runner` replaces the exec itself (tests). State lives in `<config_dir>/firewall/`.
    """
    chosen = (name or env.get("NETAVARK_FW") or DEFAULT).strip().lower()
    if chosen not in CHOICES:
        raise BurrowError(
            f"unknown firewall driver {chosen!r}: valid choices are {', '.join(CHOICES)}"
        )
    if chosen == "none":
        return NoFirewall()
    if chosen == "firewalld":  # D-Bus, no tools; imported here so the others never load jeepney
        from netns.firewall.firewalld import FirewalldFirewall
        return FirewalldFirewall(StateStore(config_dir), env)
    if runner is subprocess_runner:
        missing = [t for t in _TOOLS[chosen] if shutil.which(t) is None]
        if missing:
            raise BurrowError(
                f"firewall ({chosen}): {missing[0]} is not installed (not found in PATH); "
                f"install it or choose another --firewall-driver ({', '.join(CHOICES)})"
            )
    store = StateStore(config_dir)
    backend: Firewall
    real = runner is subprocess_runner
    if chosen == "iptables":
        # In-process (the warm engine): container rules deleted by handle (ipt_handles.py).
        nfnl_ipt = shared_nfnl() if real and not argv_prefix else None
        backend = IptablesFirewall(store, argv_prefix=argv_prefix, runner=runner, nfnl=nfnl_ipt)
    else:
        nfnl = None
        if real and not argv_prefix and env.get("BURROW_NFT_EXEC") != "1":
            # In-process libnftables: same JSON batch, same atomic transaction, no exec; and
            # the raw netlink questions that need no ruleset fetch (firewall/nfnl.py).
            lib = LibNftables.load()
            if lib is not None:
                runner, nfnl = lib, shared_nfnl()
        table = env.get("BURROW_NFT_TABLE") or "netavark"
        backend = NftablesFirewall(store, argv_prefix=argv_prefix, runner=runner, table=table,
                                   nfnl=nfnl)
    # Real rules: bind their subnets to firewalld's trusted zone when it runs (Netavark 1.4).
    # A replaced runner (tests) means no kernel rules, so no firewalld either.
    return TrustedZone(backend, store, env) if real else backend


@functools.cache
def shared_nfnl() -> Nfnl:
    """One per process, so its per-netns sockets outlive a request (the warm engine)."""
    return Nfnl()


__all__ = ["CHOICES", "DEFAULT", "Firewall", "NetworkFw", "PortFw", "select"]
