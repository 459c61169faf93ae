from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.podman_env import EnvironmentProblem, build_rootfs_tar, ensure_host_fixes, environment_problem


@pytest.fixture(scope="session")
def podman_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The busybox rootfs tar (podman.md §1), after the host-wide fixes Podman needs here."""
    problem = environment_problem()
    if problem:
        pytest.skip(problem)
    try:
        ensure_host_fixes()
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    d = tmp_path_factory.mktemp("podman-image")
    d.chmod(0o755)
    yield build_rootfs_tar(d)
