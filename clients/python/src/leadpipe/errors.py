"""leadpipe's errors as exceptions that carry their google.rpc details.

Every status leadpipe returns may carry a google.rpc.Status in `grpc-status-details-bin`:
INVALID_ARGUMENT a BadRequest with one violation per bad field, FAILED_PRECONDITION (a refused
move) a PreconditionFailure with one violation per unmet criterion, OUT_OF_RANGE on a stream an
ErrorInfo whose metadata names the oldest sequence still available. `LeadpipeError` decodes them
once; it is still a `grpc.RpcError`, with `code()` and `details()`.
"""

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """A bad request field: its path in snake_case (for example "lead.expected_close_time")."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """An unmet precondition, for example ("STAGE_CRITERION", "bant_budget", "...")."""

    type: str
    subject: str
    description: str


class LeadpipeError(grpc.RpcError):
    """A failed call, with the google.rpc details it carried."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: tuple = (),
        precondition_violations: tuple = (),
        error_info: "error_details_pb2.ErrorInfo | None" = None,
    ):
        super().__init__(f"{code.name}: {message}")
        self._code = code
        self.message = message
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.precondition_violations: tuple[PreconditionViolation, ...] = tuple(
            precondition_violations
        )
        self.error_info = error_info

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "LeadpipeError":
        """The LeadpipeError subclass for `error`'s code, with its details decoded."""
        if isinstance(error, LeadpipeError):
            return error
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        fields, preconditions, info = [], [], None
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        for detail in status.details if status is not None else ():
            bad_request = error_details_pb2.BadRequest()
            failure = error_details_pb2.PreconditionFailure()
            error_info = error_details_pb2.ErrorInfo()
            if detail.Unpack(bad_request):
                fields += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
            elif detail.Unpack(failure):
                preconditions += [
                    PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
                ]
            elif detail.Unpack(error_info):
                info = error_info
        subclass = _BY_CODE.get(code, LeadpipeError)
        return subclass(code, message or "", fields, preconditions, info)


class InvalidArgument(LeadpipeError):
    """INVALID_ARGUMENT: see `field_violations`, one per bad field."""


class FailedPrecondition(LeadpipeError):
    """FAILED_PRECONDITION, for example a refused move: see `precondition_violations`."""


class NotFound(LeadpipeError):
    """NOT_FOUND."""


class AlreadyExists(LeadpipeError):
    """ALREADY_EXISTS."""


class Aborted(LeadpipeError):
    """ABORTED: the etag sent is stale; read the resource again and retry."""


class OutOfRange(LeadpipeError):
    """OUT_OF_RANGE, for example a stream resumed from a sequence no longer retained."""


class Unauthenticated(LeadpipeError):
    """UNAUTHENTICATED: no API key, or an unknown or revoked one."""


class PermissionDenied(LeadpipeError):
    """PERMISSION_DENIED: the API key's role does not allow the call."""


class ResourceExhausted(LeadpipeError):
    """RESOURCE_EXHAUSTED: a limit (streams per tenant, request size) was reached."""


class Unavailable(LeadpipeError):
    """UNAVAILABLE: the server is unreachable or shutting down; safe to retry."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}
