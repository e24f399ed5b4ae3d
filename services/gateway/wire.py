"""Reads one top-level string field out of a serialized protobuf message, without parsing it.

The gateway forwards requests as the bytes it received; it only needs the endpoint's name
(`PredictRequest.endpoint_name`, `ModelInferRequest.model_name`: both field 1). Walking the
top-level fields and skipping each by its length costs the same for a 6 MiB tensor as for one
iris row, where a full parse would copy the payload. Protobuf's rules hold: fields may come in
any order and, for a field given twice, the last one wins.
"""

from __future__ import annotations

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_SGROUP, _WIRE_EGROUP, _WIRE_I32 = range(6)


class MalformedMessage(ValueError):
    """The bytes are not a valid protobuf message (or the field is not UTF-8)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise MalformedMessage("varint longer than 10 bytes")


def read_string_field(data: bytes, field_number: int) -> str:
    """The value of top-level string field `field_number` in `data`; "" when absent.

    Raises:
        MalformedMessage: truncated or invalid wire data, a group, or a value not UTF-8.
    """
    found = b""
    end = len(data)
    pos = 0
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            wire_type = key & 7
            if wire_type == _WIRE_LEN:
                length, pos = _varint(data, pos)
                stop = pos + length
                if stop > end:
                    raise MalformedMessage("a field runs past the end of the message")
                if key >> 3 == field_number:
                    found = data[pos:stop]
                pos = stop
            elif wire_type == _WIRE_VARINT:
                _, pos = _varint(data, pos)
            elif wire_type == _WIRE_I64:
                pos += 8
            elif wire_type == _WIRE_I32:
                pos += 4
            else:
                raise MalformedMessage(f"unsupported wire type {wire_type}")
    except IndexError:
        raise MalformedMessage("the message is truncated") from None
    if pos != end:
        raise MalformedMessage("the message is truncated")
    try:
        return found.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage(f"field {field_number} is not valid UTF-8") from None
