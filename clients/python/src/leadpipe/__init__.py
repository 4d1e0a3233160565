"""A Python client for leadpipe.

`leadpipe.v1` holds the messages and stubs generated from proto/ by grpcio-tools; this package
adds what every caller otherwise writes again: `connect()` with API-key authentication,
Money as Decimal (`money`, `to_decimal`), timestamps as aware datetimes (`timestamp`,
`to_datetime`), errors as exceptions with their violations (`LeadpipeError` and its
subclasses), and `Client.watch_stage_changes`, which resumes after its last sequence.
"""

from leadpipe.client import Client, StageChangeWatch, connect
from leadpipe.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LeadpipeError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from leadpipe.money import money, to_decimal
from leadpipe.timestamps import timestamp, to_datetime

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Client",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "LeadpipeError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "StageChangeWatch",
    "Unauthenticated",
    "Unavailable",
    "connect",
    "money",
    "timestamp",
    "to_datetime",
    "to_decimal",
]
