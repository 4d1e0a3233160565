"""google.protobuf.Timestamp to and from timezone-aware `datetime`.

protobuf's own `Timestamp.FromDatetime` reads a naive datetime as UTC, so a local time silently
shifts by the machine's offset; here a naive datetime is refused instead.
"""

from datetime import datetime, timezone

from google.protobuf import timestamp_pb2


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """The Timestamp of an aware datetime (any time zone); ValueError for a naive one."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone: pass an aware datetime")
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value.astimezone(timezone.utc))
    return result


def to_datetime(value: timestamp_pb2.Timestamp) -> datetime:
    """The instant of a Timestamp, as an aware datetime in UTC (microsecond precision)."""
    return value.ToDatetime(tzinfo=timezone.utc)
