//! The one mapping from application errors to gRPC statuses, with google.rpc details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use std::time::Duration;

use crate::app::AppError;
use crate::domain::FieldViolation;
use crate::domain::ids::TenantId;

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
                let shown = fitting(
                    violations
                        .iter()
                        .map(|v| [v.kind.as_str(), v.subject.as_str(), v.description.as_str()]),
                );
                for v in &violations[..shown] {
                    details.add_precondition_failure_violation(
                        clip(&v.kind),
                        clip(&v.subject),
                        clip(&v.description),
                    );
                }
                let message = summary(
                    &format!("{}: unmet ", clip(&message)),
                    ", ",
                    violations.iter().map(|v| v.subject.clone()),
                    shown,
                );
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            AppError::Unavailable(message) => {
                tracing::warn!(%message, "database unavailable");
                Status::with_error_details(
                    Code::Unavailable,
                    "the database is unavailable or busy; nothing was written, retry with backoff",
                    ErrorDetails::with_retry_info(Some(UNAVAILABLE_RETRY_DELAY)),
                )
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
            AppError::Unauthenticated(message) => Status::unauthenticated(message),
            AppError::PermissionDenied(message) => Status::permission_denied(message),
            AppError::Internal(message) => {
                tracing::error!(%message, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// The wait that UNAVAILABLE's RetryInfo suggests before the first retry: long enough for a
/// lock held by another writer or a restarting database, short for a client's backoff to grow
/// from.
pub const UNAVAILABLE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// INVALID_ARGUMENT with a BadRequest holding one field violation per bad field.
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let mut details = ErrorDetails::new();
    let shown = fitting(
        violations
            .iter()
            .map(|v| [v.field.as_str(), v.description.as_str()]),
    );
    for v in &violations[..shown] {
        details.add_bad_request_violation(clip(&v.field), clip(&v.description));
    }
    let message = summary(
        "invalid request: ",
        "; ",
        violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description)),
        shown,
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

// A status travels in HTTP/2 trailers, and clients cap the size of a header block: hyper at
// 16 KiB, gRPC's C core (Python, Ruby, PHP, C#) at 8 KiB by default. `grpc-message` is
// percent-encoded and the details base64-encoded, so a pipeline of 50 stages with malformed
// criteria, each violation quoting its input, reached the client as an HTTP/2 protocol error
// instead of INVALID_ARGUMENT. These budgets keep every status well inside 8 KiB: the first
// violations in full (each text clipped), and the message says how many more there were.
const DETAILS_BUDGET_BYTES: usize = 4 * 1024;
const MESSAGE_BUDGET_BYTES: usize = 512;
const TEXT_MAX_BYTES: usize = 200;

/// `text`, cut at a character boundary to at most `TEXT_MAX_BYTES`, with `…` where it was cut.
fn clip(text: &str) -> String {
    if text.len() <= TEXT_MAX_BYTES {
        return text.to_owned();
    }
    let mut cut = TEXT_MAX_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// How many of the violations (each given by its texts) fit in the details budget, clipped.
fn fitting<'a, const N: usize>(violations: impl Iterator<Item = [&'a str; N]>) -> usize {
    let mut used = 0;
    let mut count = 0;
    for texts in violations {
        used += texts
            .iter()
            .map(|t| t.len().min(TEXT_MAX_BYTES))
            .sum::<usize>();
        if used > DETAILS_BUDGET_BYTES {
            break;
        }
        count += 1;
    }
    count
}

/// `prefix` and the parts joined by `separator`, as many as fit the message budget, then how
/// many more there were (beyond the message, and beyond the `shown` that the details carry).
fn summary(
    prefix: &str,
    separator: &str,
    parts: impl ExactSizeIterator<Item = String>,
    shown: usize,
) -> String {
    let total = parts.len();
    let mut message = prefix.to_owned();
    for (i, part) in parts.enumerate() {
        let part = clip(&part);
        if message.len() + separator.len() + part.len() > MESSAGE_BUDGET_BYTES {
            message.push_str(&format!(
                "{separator}and {} more ({} in the error details)",
                total - i,
                shown.saturating_sub(i)
            ));
            return message;
        }
        if i > 0 {
            message.push_str(separator);
        }
        message.push_str(&part);
    }
    message
}

pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    invalid_argument(vec![FieldViolation::new(field, description)])
}

/// INVALID_ARGUMENT for a streamed message that tonic could not decode (and reported as
/// INTERNAL): the client sent it.
pub fn undecodable_stream_message(index: usize, status: &Status) -> Status {
    Status::invalid_argument(format!(
        "message {index} of the import stream could not be decoded: {}",
        status.message()
    ))
}

/// UNAVAILABLE for a call that arrives before the database is connected and migrated.
pub fn not_ready() -> Status {
    Status::unavailable(
        "the database is not reachable yet; the server keeps trying. Retry with backoff",
    )
}

/// RESOURCE_EXHAUSTED with a RetryInfo giving the wait, for a tenant over its rate.
pub fn rate_limited(tenant: &TenantId, wait: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("tenant {tenant} is over its rate limit; retry in {wait:?}"),
        ErrorDetails::with_retry_info(Some(wait)),
    )
}

/// DEADLINE_EXCEEDED for a call still running when its deadline passed.
pub fn deadline_exceeded(deadline: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call did not complete within its deadline of {deadline:?}"
    ))
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;
    use crate::app::PreconditionViolation;

    /// The bytes a status adds to the HTTP/2 trailers.
    fn trailer_bytes(status: &Status) -> usize {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("encodable");
        headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum()
    }

    #[test]
    fn a_few_violations_are_reported_whole() {
        let status = invalid_argument(vec![
            FieldViolation::new("lead.title", "is required"),
            FieldViolation::new("lead.amount", "must not be negative"),
        ]);
        assert_eq!(
            status.message(),
            "invalid request: lead.title: is required; lead.amount: must not be negative"
        );
        assert_eq!(
            status
                .get_details_bad_request()
                .unwrap()
                .field_violations
                .len(),
            2
        );
    }

    #[test]
    fn thousands_of_long_violations_stay_inside_what_clients_accept() {
        let long = "ꝝ¥🫳".repeat(400);
        let violations: Vec<FieldViolation> = (0..1000)
            .map(|i| FieldViolation::new(format!("pipeline.stages[{i}].key {long}"), &long))
            .collect();
        let status = invalid_argument(violations);
        assert!(
            trailer_bytes(&status) < 8 * 1024,
            "{}",
            trailer_bytes(&status)
        );
        let shown = status.get_details_bad_request().unwrap().field_violations;
        assert!(!shown.is_empty() && shown.len() < 1000);
        assert!(shown[0].field.starts_with("pipeline.stages[0].key"));
        // Two clipped violations fit the message; the details carry more.
        assert!(
            status.message().contains("; and 998 more ("),
            "{}",
            status.message()
        );

        let status: Status = AppError::FailedPrecondition {
            message: "lead cannot move".into(),
            violations: (0..1000)
                .map(|i| PreconditionViolation {
                    kind: "ENTRY_CRITERION".into(),
                    subject: format!("criterion_{i}"),
                    description: long.clone(),
                })
                .collect(),
        }
        .into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            trailer_bytes(&status) < 8 * 1024,
            "{}",
            trailer_bytes(&status)
        );
        let shown = status
            .get_details_precondition_failure()
            .unwrap()
            .violations;
        assert_eq!(shown[0].subject, "criterion_0");
        assert!(shown.len() < 1000);
    }

    #[test]
    fn clipping_respects_character_boundaries() {
        let clipped = clip(&"é".repeat(300));
        assert!(clipped.len() <= TEXT_MAX_BYTES);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
