//! The one mapping from application errors to gRPC statuses, with google.rpc details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::AppError;
use crate::domain::FieldViolation;

impl From<AppError> for Status {
    fn from(error: AppError) -> Self {
        match error {
            AppError::InvalidArgument(violations) => invalid_argument(violations),
            AppError::NotFound { .. } => Status::not_found(error.to_string()),
            AppError::Aborted(message) => Status::aborted(message),
            AppError::AlreadyExists(message) => Status::already_exists(message),
            AppError::FailedPrecondition {
                message,
                violations,
            } => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_precondition_failure_violation(&v.kind, &v.subject, &v.description);
                }
                let summary: Vec<&str> = violations.iter().map(|v| v.subject.as_str()).collect();
                Status::with_error_details(
                    Code::FailedPrecondition,
                    format!("{message}: unmet {}", summary.join(", ")),
                    details,
                )
            }
            AppError::Unavailable(message) => {
                tracing::warn!(%message, "database unavailable");
                Status::unavailable("the database is unavailable; retry with backoff")
            }
            AppError::OutOfRange {
                message,
                oldest_available,
            } => match oldest_available {
                Some(oldest) => Status::with_error_details(
                    Code::OutOfRange,
                    message,
                    ErrorDetails::with_error_info(
                        "SEQUENCE_EXPIRED",
                        "leadpipe",
                        [("oldest_available_sequence".to_string(), oldest.to_string())],
                    ),
                ),
                None => Status::out_of_range(message),
            },
            AppError::ShuttingDown(message) => Status::unavailable(message),
            AppError::ResourceExhausted(message) => Status::resource_exhausted(message),
            AppError::Internal(message) => {
                tracing::error!(%message, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// INVALID_ARGUMENT with a BadRequest holding one field violation per bad field.
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let mut details = ErrorDetails::new();
    for v in &violations {
        details.add_bad_request_violation(&v.field, &v.description);
    }
    let summary: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {}", summary.join("; ")),
        details,
    )
}

pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    invalid_argument(vec![FieldViolation::new(field, description)])
}
