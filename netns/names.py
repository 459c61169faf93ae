"""Safe names: values that reach the kernel, a rule, a path or a config file are checked here.

One place for each naming fact: the interface-name, object-name and MAC patterns live only here;
the firewall, the engine's validation and `create` all call these functions.
"""

from __future__ import annotations

import re

from netns.errors import BurrowError

IFNAMSIZ = 15  # the kernel's limit, without the trailing NUL
RESERVED_IFNAMES = frozenset({"all", "default"})
# Every pattern here is applied with fullmatch(), never match(): `$` also matches just before a
# trailing newline, so "web\n" passed every check and reached DNS files and iptables batches.
# Kernel interface names can hold almost anything but '/', ':' and whitespace; we also refuse
# '+' (an iptables wildcard) and other punctuation that could change a rule's meaning.
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.\-@]+$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# Podman's rule for container and network names (libpod `NameRegex`); ids follow it too. No '/',
# no leading '.', so a name used as a file name stays inside its directory.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Network names become file names (`<name>%int`, `.<name>%int.tmp`) below NAME_MAX (255).
MAX_NETWORK_NAME = 200
MAX_NAME = 253  # container names and aliases are DNS names


def ifname(name: str, what: str) -> str:
    """An interface name the kernel accepts and that can't smuggle anything into a rule."""
    if not name:
        raise BurrowError(f"no {what} name given")
    if len(name) > IFNAMSIZ:
        raise BurrowError(
            f"{what} name {name!r} is too long: {len(name)} characters, the kernel allows {IFNAMSIZ}"
        )
    if name in (".", "..") or not IFNAME_RE.fullmatch(name):
        raise BurrowError(
            f"{what} name {name!r} is not valid: use ASCII letters, digits and '_', '.', '-' only"
        )
    if name in RESERVED_IFNAMES:
        # /proc/sys/net/*/conf/{all,default} exist already: the kernel refuses the link with a
        # bare EINVAL, after the rest of the setup was applied (and then rolled back).
        raise BurrowError(f"{what} name {name!r} is reserved by the kernel: pick another name")
    return name


def is_ifname(name: str) -> bool:
    try:
        ifname(name, "interface")
    except BurrowError:
        return False
    return True


def mac(text: str, what: str = "static mac") -> str:
    """A unicast MAC, normalised to lower case as netlink reports it back."""
    if not MAC_RE.fullmatch(text):
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


def is_name(text: str) -> bool:
    """Podman's name/id pattern: letters, digits, '_', '.', '-', not starting with '_.-'."""
    return bool(NAME_RE.fullmatch(text))


def name(text: str, what: str, limit: int = MAX_NAME) -> str:
    """A container name, alias or id: no path separators, no config-file separators."""
    if not text:
        raise BurrowError(f"invalid {what}: it is empty")
    if len(text) > limit:
        raise BurrowError(
            f"invalid {what} {text[:20]!r}...: {len(text)} characters, the limit is {limit}"
        )
    if not NAME_RE.fullmatch(text):
        raise BurrowError(
            f"invalid {what} {text!r}: use ASCII letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return text


def network_name(text: str) -> str:
    """A network name: also the name of its DNS config file, so never a path."""
    return name(text, "network name", MAX_NETWORK_NAME)
