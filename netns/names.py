"""Safe names: values that reach the kernel, a rule or a config file are checked here first."""

from __future__ import annotations

import re

from netns.errors import BurrowError

IFNAMSIZ = 15  # the kernel's limit, without the trailing NUL
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-@]+$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# Separators of the Aardvark config format (fields by ' ', lists by ',', lines by '\n').
_CONFIG_UNSAFE = re.compile(r"[\s,]")


def ifname(name: str, what: str) -> str:
    """An interface name the kernel accepts and that can't smuggle anything into a rule."""
    if not name:
        raise BurrowError(f"no {what} name given")
    if len(name) > IFNAMSIZ:
        raise BurrowError(
            f"{what} name {name!r} is too long: {len(name)} characters, the kernel allows {IFNAMSIZ}"
        )
    if name in (".", "..") or not _IFNAME.match(name):
        raise BurrowError(
            f"{what} name {name!r} is not valid: use letters, digits and '_', '.', '-' only"
        )
    return name


def mac(text: str, what: str = "static mac") -> str:
    """A unicast MAC, normalised to lower case as netlink reports it back."""
    if not _MAC.match(text):
        raise BurrowError(
            f"invalid {what} {text!r}: expected six hex octets like 92:d0:c6:0a:29:10"
        )
    if int(text[:2], 16) & 1:
        raise BurrowError(f"invalid {what} {text!r}: a multicast address can't be an interface MAC")
    if text.replace(":", "") == "000000000000":
        raise BurrowError(
            f"invalid {what} {text!r}: the all-zero address can't be an interface MAC"
        )
    return text.lower()


def config_token(text: str, what: str) -> str:
    """A value written into an Aardvark config line: no field or list separators."""
    if not text or _CONFIG_UNSAFE.search(text):
        raise BurrowError(f"invalid {what} {text!r}: must be non-empty, with no spaces or commas")
    return text
