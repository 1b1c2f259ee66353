"""Where a protobuf encoding that failed to decode goes wrong, named as a request field.

The protobuf runtime only says that a message did not parse ("String field had bad UTF-8").
A client needs the field: ``decode_fault`` walks the wire format alongside the message's
descriptor and names the first field that breaks it: a string that is not UTF-8 (proto3
requires it), a length or varint that runs past the end, a malformed tag. Pure logic, no
I/O; it runs only for requests that already failed, so it favours clarity over speed.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from fleetwire.domain.errors import FieldViolation

# The protobuf runtime's own nesting limit; deeper input is refused by it anyway.
MAX_DEPTH = 100

_VARINT, _FIXED64, _LENGTH_DELIMITED, _START_GROUP, _END_GROUP, _FIXED32 = range(6)


class _Broken(Exception):
    """The encoding breaks at the current field (message in ``args[0]``)."""


def decode_fault(descriptor: Descriptor | None, data: bytes) -> FieldViolation:
    """The field of ``data`` (an encoding of ``descriptor``'s message) that breaks it.

    Falls back to the whole request (field ``""``) when no single field can be blamed,
    e.g. a truncated tag at the top level or a fault this walk does not model."""
    if descriptor is not None:
        fault = _scan(descriptor, data, "", 0)
        if fault is not None:
            return fault
        what = f"a valid {descriptor.full_name}"
    else:
        what = "a valid protobuf message"
    return FieldViolation("", f"the request is not {what} (corrupt encoding)")


def _scan(
    descriptor: Descriptor | None, data: bytes, prefix: str, depth: int
) -> FieldViolation | None:
    """The first fault in ``data`` read as ``descriptor`` (None: an unknown field's bytes,
    checked for structure only), or None when this walk finds nothing wrong."""
    if depth > MAX_DEPTH:
        return FieldViolation(prefix, f"nested deeper than {MAX_DEPTH} messages")
    seen: dict[int, int] = {}
    in_map = descriptor is not None and bool(descriptor.GetOptions().map_entry)
    pos = 0
    while pos < len(data):
        try:
            tag, pos = _varint(data, pos)
        except _Broken:
            return FieldViolation(prefix, "truncated field tag")
        number, wire_type = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number) if descriptor is not None else None
        path = prefix if in_map else _path(prefix, field, seen)
        try:
            pos, fault = _field(data, pos, number, wire_type, field, path, depth)
        except _Broken as err:
            return FieldViolation(path, str(err))
        if fault is not None:
            return fault
    return None


def _field(
    data: bytes,
    pos: int,
    number: int,
    wire_type: int,
    field: FieldDescriptor | None,
    path: str,
    depth: int,
) -> tuple[int, FieldViolation | None]:
    """Reads one field's value at ``pos``; returns the position after it and any fault
    inside it. Raises _Broken when the value itself is malformed."""
    if number == 0:
        raise _Broken("field number 0 is not allowed")
    if wire_type == _VARINT:
        _, pos = _varint(data, pos)
        return pos, None
    if wire_type in (_FIXED64, _FIXED32):
        pos += 8 if wire_type == _FIXED64 else 4
        if pos > len(data):
            raise _Broken("truncated fixed-width value")
        return pos, None
    if wire_type == _LENGTH_DELIMITED:
        length, pos = _varint(data, pos)
        if pos + length > len(data):
            raise _Broken("length runs past the end of the message")
        chunk, pos = data[pos : pos + length], pos + length
        if field is None:
            return pos, None
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                return pos, FieldViolation(path, "not valid UTF-8 (string fields must be)")
            return pos, None
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return pos, _scan(field.message_type, chunk, path, depth + 1)
        return pos, None  # bytes, or a packed repeated scalar
    if wire_type == _START_GROUP:
        return _group(data, pos, number, path, depth)
    raise _Broken(f"wire type {wire_type} is not allowed here")


def _group(
    data: bytes, pos: int, number: int, path: str, depth: int
) -> tuple[int, FieldViolation | None]:
    """Skips a (deprecated, never ours) group up to its END_GROUP tag."""
    if depth >= MAX_DEPTH:
        raise _Broken(f"nested deeper than {MAX_DEPTH} messages")
    while pos < len(data):
        tag, pos = _varint(data, pos)
        inner, wire_type = tag >> 3, tag & 7
        if wire_type == _END_GROUP:
            if inner != number:
                raise _Broken("group ends with the wrong field number")
            return pos, None
        pos, fault = _field(data, pos, inner, wire_type, None, path, depth + 1)
        if fault is not None:
            return pos, fault
    raise _Broken("group is not closed")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise _Broken("truncated or over-long varint")


def _path(prefix: str, field: FieldDescriptor | None, seen: dict[int, int]) -> str:
    """The field's name as a request path: ``job.prompt``, ``jobs[3]``, ``labels`` (a map
    entry is named by its map), or the enclosing path for a field we do not know."""
    if field is None:
        return prefix
    name = f"{prefix}.{field.name}" if prefix else field.name
    if not field.is_repeated or (field.message_type is not None and _is_map(field)):
        return name
    index = seen.get(field.number, 0)
    seen[field.number] = index + 1
    return f"{name}[{index}]"


def _is_map(field: FieldDescriptor) -> bool:
    return bool(field.message_type.GetOptions().map_entry)
