"""firewalld over D-Bus: the bus connection (`bus`), firewalld's API (`api`), and what the
iptables and nftables backends do when firewalld runs (`trusted`, Netavark 1.4's trusted zone).

Everything speaks D-Bus through jeepney (pure Python, no dependencies, blocking I/O that fits
the engine's synchronous requests); no `firewall-cmd` process runs on the setup path.
"""
