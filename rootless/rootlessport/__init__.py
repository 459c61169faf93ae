"""`burrow-rootlessport`: a drop-in for Podman 4.3's `rootlessport` on burrow's forwarder.

Podman execs it (found through `helper_binaries_dir`, linked by `burrow podman enable --user`)
for every rootless container with published ports; the contract is spec/rootlessport.md.
Start-up is on `podman run`'s critical path, so it comes in two phases:

    config.py    the stdin JSON, every field checked (stdlib only, light)
    listen.py    bind every host port and the control socket, with upstream's error lines
    main.py      phase 1: parse, bind, point fds 1 and 2 at /dev/null, say ready;
                 phase 2: import the forwarder and serve until ExitFD reaches EOF
    forward.py   phase 2: burrow's forwarder (rootless.ports) wired for one container, the
                 dialer a thread that entered the container's netns once
    control.py   the SEQPACKET control socket: `network connect`/`disconnect` re-point the ports

Nothing in phase 1 imports rootless.ports: the kernel queues connections on the bound
listeners until phase 2 serves them, so Podman is released after ~interpreter start-up.
"""
