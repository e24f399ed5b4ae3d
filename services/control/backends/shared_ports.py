"""Stable endpoint addresses on one host: a port reserved by the control, shared by replicas.

All replicas of an endpoint bind the endpoint's port with SO_REUSEPORT, and the kernel spreads
incoming connections over the sockets *listening* there. To own such a port without serving on
it, the control binds a TCP socket with SO_REUSEPORT and never calls listen(): the bound socket
keeps the port out of everyone else's reach (a socket without SO_REUSEPORT, or of another
user, cannot bind it; port-0 binds never pick it), yet it is not in the listening set, so no
connection is ever queued on it. While no replica listens, connects are refused at once
instead of hanging. The reservation is held for the endpoint's lifetime and closed on delete.
No port is probed first, so nothing can race between choosing a port and holding it.

The kernel lets sockets share a port only when they belong to one user (the user that created
each socket). When replicas run as another user than the control (`--job-user`), that user
creates the reservation: a short-lived helper process running as it binds the socket and hands
it to the control over a socket pair (SCM_RIGHTS).
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

from services.runtime.job_user import JobUser, as_user_command

# Run as the replicas' user: binds the reservation and sends it back through the socket pair
# end whose descriptor is argv[1] (or an errno as text when the bind fails).
_RESERVE_AS_OWNER = """
import socket, sys
channel = socket.socket(fileno=int(sys.argv[1]))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((sys.argv[2], int(sys.argv[3])))
except OSError as err:
    channel.sendall(str(err.errno).encode())
else:
    socket.send_fds(channel, [b"0"], [sock.fileno()])
"""


def reserve_shared_port(host: str, port: int = 0, owner: JobUser | None = None) -> socket.socket:
    """Binds (never listens) a SO_REUSEPORT TCP socket at host:port and returns it.

    Args:
        host: the IPv4 address replicas bind, e.g. 127.0.0.1.
        port: the port to claim again (after a control restart), or 0 for a new one.
        owner: the user the replicas run as, when not this process's.

    Raises:
        OSError: the port is held by a socket that does not share (EADDRINUSE).
    """
    if owner is not None:
        return _reserve_as(host, port, owner)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _reserve_as(host: str, port: int, owner: JobUser) -> socket.socket:
    ours, theirs = socket.socketpair()
    try:
        with ours:
            with theirs:
                helper = [sys.executable, "-I", "-c", _RESERVE_AS_OWNER, str(theirs.fileno())]
                done = subprocess.run(
                    as_user_command(owner, [*helper, host, str(port)]),
                    pass_fds=(theirs.fileno(),),
                    cwd="/",
                    env={},
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            # The helper exited and our copy of its end is closed: a read never blocks.
            message, fds, _flags, _address = socket.recv_fds(ours, 64, 1)
    except (OSError, subprocess.SubprocessError) as err:
        raise OSError(
            errno.EIO, f"cannot reserve {host}:{port} as user {owner.name}: {err}"
        ) from err
    if fds:
        return socket.socket(fileno=fds[0])
    if message.isdigit():
        code = int(message)
        raise OSError(code, os.strerror(code))
    said = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no error text"]
    raise OSError(errno.EIO, f"the port helper running as {owner.name} failed: {said[0]}")
