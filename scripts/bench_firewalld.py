"""Setup/teardown latency: burrow's firewalld driver vs its nftables driver, side by side.

Each driver gets its own throwaway "host" netns; the firewalld one runs a private firewalld
there (dbus-daemon on its own socket + `firewalld --system-config <tmpdir>`, as the test suite
starts it: tests/firewalld_env.py), and burrow reaches it only through that socket. A fresh
"container" netns per iteration; iterations interleave the drivers so load drift hits both.
Same case as scripts/bench_engine.py (one bridge made and deleted per container).

Run: sudo .venv/bin/python scripts/bench_firewalld.py [--runs N]   (or: sudo scripts/bench firewalld)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_engine import Tool, case  # noqa: E402

from tests.firewalld_env import FirewalldEnv, missing_tools, start  # noqa: E402
from tests.nsutil import VENV_BIN, Netns  # noqa: E402


def tools() -> tuple[list[Tool], FirewalldEnv]:
    base = [str(VENV_BIN / "burrow-netavark"), "--rootless=false",
            f"--aardvark-binary={VENV_BIN / 'burrow-dns'}"]
    # No bus for the nftables rows: they must not find a firewalld (the machine's least of all).
    env = {"NETAVARK_DNS_PORT": "53", "BURROW_ENGINE_IDLE": "600", "DBUS_SYSTEM_BUS_ADDRESS": ""}
    fw_host = Netns()
    fenv = start(fw_host)
    bus = fenv.env
    made = [
        Tool("nftables (warm engine)", [*base, "--firewall-driver", "nftables"], env),
        Tool("firewalld (warm engine)", [*base, "--firewall-driver", "firewalld"], {**env, **bus},
             host=fw_host),
        Tool("nftables (in-process)", [*base, "--firewall-driver", "nftables"],
             {**env, "BURROW_ENGINE": "off"}),
        Tool("firewalld (in-process)", [*base, "--firewall-driver", "firewalld"],
             {**env, **bus, "BURROW_ENGINE": "off"}, host=fw_host),
    ]
    return made, fenv


def run_case(label: str, dual: bool, runs: int) -> list[str]:
    made, fenv = tools()
    opts = case(dual)
    rows: list[str] = []
    try:
        for i in range(runs + 2):  # two warm-up rounds: base rules / zone and policies exist
            for tool in made:
                ctr = Netns()
                try:
                    o = copy.deepcopy(opts)
                    s = tool.call("setup", ctr, o)
                    t = tool.call("teardown", ctr, o)
                finally:
                    ctr.close()
                if i >= 2:
                    tool.setup_ms.append(s)
                    tool.teardown_ms.append(t)
        ref = {"warm": made[0], "in-process": made[2]}
        rows.append(f"\n{label}: n={runs} per driver, medians in ms (ratio: vs nftables, same mode)")
        rows.append(f"{'driver':26} {'setup':>8} {'ratio':>6} {'teardown':>9} {'ratio':>6}")
        for tool in made:
            r = ref["warm"] if "warm" in tool.name else ref["in-process"]
            s, t = statistics.median(tool.setup_ms), statistics.median(tool.teardown_ms)
            rs, rt = statistics.median(r.setup_ms), statistics.median(r.teardown_ms)
            rows.append(f"{tool.name:26} {s:8.1f} {s / rs:6.2f} {t:9.1f} {t / rt:6.2f}")
    finally:
        for tool in made:
            if tool.host is not made[1].host:
                tool.close()
        fenv.stop()
        made[1].close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    missing = missing_tools()
    if missing:
        print(f"{', '.join(missing)} not installed (scripts/install --test): no firewalld to measure")
        return 1
    rows = ["== burrow: firewalld driver vs nftables driver (setup/teardown latency, one container)"]
    rows += run_case("IPv4, 1 tcp port, no DNS", False, args.runs)
    rows += run_case("dual-stack, DNS, 1 tcp port", True, args.runs)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
