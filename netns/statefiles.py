"""The names of the engine's state files, spelled once.

Everything under a Netavark `--config` directory that burrow or aardvark-dns reads by name is
listed here; `rootless/paths.py` is the one place for the per-user world's own files. Kept free
of imports: the stdlib-only thin client reads it on every call.
"""

ENGINE_SOCK = "burrow-engine.sock"  # the warm engine of a --config dir
ENGINE_LOCK = "burrow.lock"  # one setup/teardown at a time per --config dir
AARDVARK_DIR = "aardvark-dns"  # Aardvark-format DNS config, one file per network
AARDVARK_PID = "aardvark.pid"  # inside AARDVARK_DIR, as aardvark-dns writes it
AARDVARK_LOCK = "aardvark.lock"  # beside AARDVARK_DIR, as netavark takes it
# burrow-dns's counts for `burrow status` (netns/dns/limits.py), inside AARDVARK_DIR: a dotfile,
# so no network can be named like it and no DNS server reads it as a network's config.
DNS_STATS = ".burrow-dns-stats.json"
# burrow-dns's reload socket (netns/dns/control.py), inside AARDVARK_DIR, a dotfile for the same
# reason; aardvark-dns 1.4 reads every other file as a network, so a start of it removes both.
DNS_CONTROL = ".burrow-dns.sock"
FIREWALL_DIR = "firewall"
FIREWALL_LOCK = "lock"  # inside FIREWALL_DIR; non-empty while state may be behind the kernel
FIREWALL_APPLYING = "applying"  # inside FIREWALL_DIR: older burrows' mark (read, then removed)
FIREWALL_DRIVER = "firewall-driver"  # inside FIREWALL_DIR, Netavark's name and content
FIREWALL_NETWORKS = "networks"  # inside FIREWALL_DIR: networks/<netid>, Netavark's SetupNetwork
FIREWALL_PORTS = "ports"  # inside FIREWALL_DIR: ports/<netid>_<cid>, Netavark's PortForwardConfig
FIREWALL_LEDGER = ".burrow-ledger.json"  # inside FIREWALL_DIR: what each backend knows is installed
FIREWALL_HANDLES = ".burrow-nft-handles"  # inside FIREWALL_DIR: <portkey> -> its rules' handles
FIREWALL_IPT_HANDLES = ".burrow-ipt-handles"  # the same for the iptables driver (iptables-nft)
FIREWALL_OLD_INSTALLED = "installed.json"  # inside FIREWALL_DIR: the old state layout's mark


SOCK_SUFFIX = ".sock"
LOG_SUFFIX = ".log"
# What engine_sock_for makes, and the log beside each socket (the engine's single-instance lock).
ENGINE_NAME_RE = r"engine-\d+-\d+\.(sock|log)\Z"


def engine_sock_for(net: int, user: int) -> str:
    """The socket of an engine started without --config, keyed by netns and user ns."""
    return f"engine-{net}-{user}{SOCK_SUFFIX}"


def engine_log_for(sock_path: str) -> str:
    """The log beside an engine's socket (`burrow-engine.sock` -> `burrow-engine.log`)."""
    base = sock_path[: -len(SOCK_SUFFIX)] if sock_path.endswith(SOCK_SUFFIX) else sock_path
    return base + LOG_SUFFIX


def engine_sock_for_log(log_path: str) -> str:
    return log_path[: -len(LOG_SUFFIX)] + SOCK_SUFFIX
# burrow-cni's IPAM, host-local's own names under <dataDir>/<network>/ (netns/cni/hostlocal.py).
CNI_IPAM_LOCK = "lock"
CNI_IPAM_LAST = "last_reserved_ip."  # + the range set's index
# burrow-cni: what each ADD asked for (ports, names), under the CNI state dir, so that DEL and GC
# can undo it when the runtime does not send it again (netns/cni/attachments.py).
CNI_ATTACHMENTS_DIR = "cni-attachments"
