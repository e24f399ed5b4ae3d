"""Times on the wire: Unix seconds (float) in the domain, `google.protobuf.Timestamp` on the wire.

An unset timestamp from a worker means "now".
"""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(seconds: float) -> Timestamp:
    """Unix seconds as a Timestamp."""
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def seconds_or_now(stamp: Timestamp) -> float:
    """A Timestamp as Unix seconds; the current time when it is unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return time.time()
    return stamp.seconds + stamp.nanos / 1e9
