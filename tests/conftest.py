from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.nsutil import Netns, is_root


@pytest.fixture
def netns_factory() -> Iterator[Callable[[], Netns]]:
    """Make throwaway namespaces; all of them die with the test."""
    if not is_root():
        pytest.skip("environment: creating test namespaces needs root (run the suite as root)")
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
