"""A trailing newline is not part of a name. Python's `$` also matches just before a final
"\\n", so with `re.match(r"^...$")` the names "web\\n", "eth0\\n" and a MAC with a newline
passed every check at the entry and were refused (if at all) only deep inside apply: by the
DNS config writer, by iptables-restore (the newline split a rule of its batch), or by the
kernel. These are the entry checks themselves, each shape that reaches a file, rule or kernel."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from netns import names
from netns.cni.config import parse_env
from netns.cni.errors import CniError
from netns.errors import BurrowError
from rootless.ports import messages

TAILS = ["\n"]  # "\r\n" or "\n\n" were already refused: `$` spares one final "\n" only


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize(("check", "good"), [
    (lambda t: names.name(t, "container name"), "web"),
    (names.network_name, "hardnet"),
    (lambda t: names.ifname(t, "container interface"), "eth0"),
    (lambda t: names.mac(t), "92:d0:c6:0a:29:10"),
    (messages.owner, "sandbox1"),
], ids=["name", "network_name", "ifname", "mac", "ports_owner"])
def test_a_trailing_newline_is_refused(check: Callable[[str], object], good: str, tail: str) -> None:
    check(good)  # the control: the name itself is fine
    with pytest.raises(BurrowError):
        check(good + tail)


@pytest.mark.parametrize("tail", TAILS)
def test_is_name_is_false_with_a_trailing_newline(tail: str) -> None:
    assert names.is_name("www") and not names.is_name("www" + tail)
    assert names.is_ifname("eth0") and not names.is_ifname("eth0" + tail)


def test_cni_containerid_with_a_trailing_newline_is_code_4() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni"}
    parse_env({**env, "CNI_CONTAINERID": "abc"})
    with pytest.raises(CniError) as info:
        parse_env({**env, "CNI_CONTAINERID": "abc\n"})
    assert info.value.code == 4


@pytest.mark.parametrize("reserved", ["all", "default"])
def test_the_kernels_reserved_interface_names_are_refused_at_the_entry(reserved: str) -> None:
    """The kernel refuses them with a bare EINVAL ("create veth pair: Invalid argument"), which
    setup met only after the bridge and rules were made."""
    with pytest.raises(BurrowError, match="reserved by the kernel"):
        names.ifname(reserved, "container interface")
    names.ifname("all0", "container interface")  # the control


def test_the_name_rule_says_ascii() -> None:
    """'ü1' is refused, and the message says why: the rule's letters are ASCII ones."""
    for bad, check in (("ü1", lambda t: names.name(t, "sandbox name")),
                       ("eth_ü", lambda t: names.ifname(t, "interface"))):
        with pytest.raises(BurrowError, match="ASCII letters"):
            check(bad)
