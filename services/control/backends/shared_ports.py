"""Stable endpoint addresses on one host: a port reserved by the control, shared by replicas.

All replicas of an endpoint bind the endpoint's port with SO_REUSEPORT, and the kernel spreads
incoming connections over the sockets *listening* there. To own such a port without serving on
it, the control binds a TCP socket with SO_REUSEPORT and never calls listen(): the bound socket
keeps the port out of everyone else's reach (a socket without SO_REUSEPORT, or of another
user, cannot bind it; port-0 binds never pick it), yet it is not in the listening set, so no
connection is ever queued on it. While no replica listens, connects are refused at once
instead of hanging. The reservation is held for the endpoint's lifetime and closed on delete.
No port is probed first, so nothing can race between choosing a port and holding it.
"""

from __future__ import annotations

import socket


def reserve_shared_port(host: str, port: int = 0) -> socket.socket:
    """Binds (never listens) a SO_REUSEPORT TCP socket at host:port and returns it.

    Args:
        host: the IPv4 address replicas bind, e.g. 127.0.0.1.
        port: the port to claim again (after a control restart), or 0 for a new one.

    Raises:
        OSError: the port is held by a socket that does not share (EADDRINUSE).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
