"""Published ports: parse them (spec), and publish them with a port manager.

Rootful: kernel.py (the engine writes DNAT rules). Rootless: userspace.py drives the forwarder
process over its control socket (control.py is the client). The forwarder, along rootlesskit's
lines, on one netns.loop event loop:

    forwarder.py   the process: wires the parts, exits with the namespace holder
    ctlserver.py   the control socket: JSON lines parsed into messages.py's typed requests
    manager.py     the port manager: add / list / remove listeners, all or nothing
    pool.py        sockets made inside sandbox netns by dialer.py (a process in the userns)
    tcp.py         accept, dial (the client's family first), splice.py pumps both ways
    inhost.py      no pacing congestion control on hops that stay on this host
    udp.py         one flow per client address, least recently used shed at the caps
    budget.py      the caps per client and in total, derived from the fd limit; what was shed
    target.py      where a port leads: the sandbox's netns and addresses, how to dial it
    clientaddr.py  keep the client's address: transparent dials (TCP in the sandbox, UDP via
                   the user's netns)
"""
