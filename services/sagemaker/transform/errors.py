"""The batch service's exceptions: bad transform settings, records that cannot be scored.

Each carries its gRPC status code (style §8), so the control's job API can refuse bad settings
with INVALID_ARGUMENT, and a worker can report why a file failed. The settings and per-record
errors are also `ValueError`s, as plain Python callers of the domain modules expect.
"""

from __future__ import annotations

from services.runtime.errors import InvalidArgument, ModelError, ResourceExhausted


class InvalidDataProcessing(InvalidArgument, ValueError):
    """A transform's DataProcessing settings cannot work together (contract §4.3)."""


class InvalidJsonPath(InvalidDataProcessing):
    """An InputFilter or OutputFilter is not in the supported JSONPath subset."""


class RecordProcessingError(InvalidArgument, ValueError):
    """One record does not fit the filter or join: a missing key, an index out of range, ..."""


class OutputCountMismatch(ModelError):
    """The model answered a mini-batch with more or fewer outputs than it had records."""


class RecordTooLarge(ResourceExhausted):
    """One record is larger than MaxPayloadInMB, so no request can carry it (contract §4.2).

    Args:
        line: The record's line number, counted from 1 at the shard's first byte.
        size: The record's size in bytes, or as much of it as was read before reading
            stopped (a line without end is not read to its end).
        limit: The payload limit in bytes.
    """

    def __init__(self, line: int, size: int, limit: int) -> None:
        super().__init__(
            f"line {line}: the record is at least {size} bytes, more than the {limit}-byte "
            "payload limit (MaxPayloadInMB); raise the limit or split the record"
        )
        self.line = line
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[type[RecordTooLarge], tuple[int, int, int]]:
        # Workers score in a process pool; the default reduction would call __init__ with
        # the message alone.
        return (type(self), (self.line, self.size, self.limit))
