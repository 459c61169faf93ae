from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.nsutil import Netns, is_root, need_root

# No test may reach this machine's own firewalld: an empty system bus address means "no bus" to
# burrow (as to Netavark), and every process a test starts inherits it. Tests that want firewalld
# run a private one (tests/firewalld_env.py) and hand its address to their own processes only.
os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = ""


@pytest.fixture
def netns_factory() -> Iterator[Callable[[], Netns]]:
    """Make throwaway namespaces; all of them die with the test."""
    need_root()
    made: list[Netns] = []

    def make() -> Netns:
        ns = Netns()
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.close()


@pytest.fixture
def host_ns(netns_factory: Callable[[], Netns]) -> Netns:
    return netns_factory()


@pytest.fixture
def ctr_ns(netns_factory: Callable[[], Netns]) -> Netns:
    return netns_factory()


# --- rootless: burrow run as an unprivileged user (tests/rootless_user.py) ---------------------
from typing import Any  # noqa: E402  (this block is appended; the top stays untouched)


@pytest.fixture(scope="session")
def rootless_user() -> Iterator[Any]:
    """The unprivileged test user; created (idempotently) by root, used for every rootless test."""
    from tests.rootless_user import HarnessError, RootlessUser

    if not is_root():
        pytest.skip("environment: creating the unprivileged test user needs root (run as root)")
    try:
        yield RootlessUser.ensure()
    except HarnessError as e:
        pytest.fail(f"rootless harness: {e}")


@pytest.fixture
def rl(rootless_user: Any) -> Iterator[Any]:
    """A private burrow world for one test; after it, nothing of it may be left running."""
    session = rootless_user.session()
    yield session
    session.close()  # what it left fails this test: pytest_runtest_teardown below


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Every rootless world closed during this test's teardown (its own, or a module's world
    after the module's last test) must have left nothing running: name the test and what."""
    from tests.rootless_user import take_leftovers

    try:
        yield
    except BaseException:
        take_leftovers()  # the fixture that closed it has failed already, with the same news
        raise
    left = take_leftovers()
    assert not left, f"processes left after `burrow down` by the world of {'; '.join(left)}"


# --- firewalld: a real one on a private bus in the test's host netns (tests/firewalld_env.py) ---
from tests.firewalld_env import firewalld  # noqa: E402,F401
