#!/usr/bin/env python3
"""Client round-trip micro-bench: `burrow-netavark version`, warm engine vs in-process.

    .venv/bin/python scripts/bench_client.py [-n 50]

`version` runs no engine code, so the table isolates what the warm engine saves: interpreter
start-up, the client's imports and the socket round trip, against start-up plus importing the
command line in-process. `scripts/bench` can call `bench()` and print `format_table()`.
Nothing touches the network: the engine only preloads modules and answers `version`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netns import client  # noqa: E402

Row = tuple[str, float, float]  # label, median ms, p90 ms


def _time_runs(argv: Sequence[str], env: dict[str, str], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, check=True)  # fmt: skip
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _row(label: str, samples: list[float]) -> Row:
    ordered = sorted(samples)
    return label, statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


def client_import_ms(python: str, n: int = 5) -> float:
    """Cumulative `import netns.client` time from -X importtime (median of n)."""
    values = []
    for _ in range(n):
        res = subprocess.run([python, "-X", "importtime", "-c", "import netns.client"],
                             capture_output=True, text=True, cwd=REPO, check=True)  # fmt: skip
        match = re.search(r"\|\s*(\d+) \| netns\.client$", res.stderr, re.M)
        if match:
            values.append(int(match.group(1)) / 1000)
    return statistics.median(values) if values else float("nan")


def _wait_warm(cli: str, config: str, env: dict[str, str], timeout: float = 20) -> int:
    """Wait until the engine answers; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run([cli, "--config", config, "version"], capture_output=True,
                             text=True, env={**env, "BURROW_ENGINE_STATS": "1"})  # fmt: skip
        match = re.search(r"served-by=engine pid=(\d+)", res.stderr)
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"engine for {config} did not come up within {timeout} s")


def bench(n: int = 50, cli: str | None = None) -> list[Row]:
    """Median and p90 wall time per call, in ms, for each way of running `version`."""
    python = sys.executable
    cli = cli or str(Path(python).parent / "burrow-netavark")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_ENGINE")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # Podman's environment caches bytecode
    with tempfile.TemporaryDirectory(prefix="burrow-bench-") as config:
        argv = [cli, "--config", config, "version"]
        subprocess.run(argv, env={**env, "BURROW_ENGINE": "off"}, capture_output=True)  # .pyc
        rows = [_row("python -c pass (floor)", _time_runs([python, "-c", "pass"], env, n))]
        rows.append(_row("version in-process", _time_runs(argv, {**env, "BURROW_ENGINE": "off"}, n)))
        client.spawn_engine(os.path.join(config, client.SOCKET_NAME))
        pid = _wait_warm(cli, config, env)
        # pip's console-script wrapper does `import re` (~5 ms) before our code runs; a
        # plain wrapper shows what installing one instead would save.
        wrapper = Path(config, "plain-wrapper")
        wrapper.write_text(f"#!{python}\nimport sys\nfrom netns.client import main\nsys.exit(main())\n")
        wrapper.chmod(0o755)
        try:
            rows.append(_row("version warm engine", _time_runs(argv, env, n)))
            plain = [str(wrapper), *argv[1:]]
            rows.append(_row("  same, plain wrapper", _time_runs(plain, env, n)))
        finally:
            os.kill(pid, signal.SIGTERM)
    return rows


def format_table(rows: list[Row], import_ms: float | None = None) -> str:
    lines = [f"{'call':<26} {'median ms':>10} {'p90 ms':>8}"]
    lines += [f"{label:<26} {med:>10.1f} {p90:>8.1f}" for label, med, p90 in rows]
    by = {label: med for label, med, _ in rows}
    if "version in-process" in by and "version warm engine" in by:
        ratio = by["version warm engine"] / by["version in-process"]
        lines.append(f"{'warm / in-process':<26} {ratio:>10.2f}")
    if import_ms is not None:
        lines.append(f"{'import netns.client':<26} {import_ms:>10.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="runs per row (default 50)")
    opts = parser.parse_args()
    rows = bench(opts.n)
    print(format_table(rows, client_import_ms(sys.executable)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
