//! Validated identifiers.

use std::fmt;

fn is_slug(value: &str, allow_dash: bool) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && value.len() <= 63
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (allow_dash && c == '-')
        })
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// The tenant that owns a row. Every query is scoped by it.
    TenantId
);
string_id!(
    /// A pipeline id: `[a-z][a-z0-9_-]{0,62}`.
    PipelineId
);
string_id!(
    /// A stage key: `[a-z][a-z0-9_]{0,62}`.
    StageKey
);
string_id!(
    /// A criterion id: `[a-z][a-z0-9_-]{0,62}`.
    CriterionId
);

impl TenantId {
    pub fn parse(value: &str) -> Result<Self, String> {
        if is_slug(value, true) {
            Ok(Self(value.to_owned()))
        } else {
            Err("must be 1 to 63 characters of [a-z0-9_-], starting with a letter".into())
        }
    }

    pub fn default_tenant() -> Self {
        Self("default".into())
    }
}

impl PipelineId {
    pub fn parse(value: &str) -> Result<Self, String> {
        if is_slug(value, true) {
            Ok(Self(value.to_owned()))
        } else {
            Err("must be 1 to 63 characters of [a-z0-9_-], starting with a letter".into())
        }
    }

    pub fn default_pipeline() -> Self {
        Self("default".into())
    }
}

impl StageKey {
    pub fn parse(value: &str) -> Result<Self, String> {
        if is_slug(value, false) {
            Ok(Self(value.to_owned()))
        } else {
            Err("must be 1 to 63 characters of [a-z0-9_], starting with a letter".into())
        }
    }
}

impl CriterionId {
    pub fn parse(value: &str) -> Result<Self, String> {
        if is_slug(value, true) {
            Ok(Self(value.to_owned()))
        } else {
            Err("must be 1 to 63 characters of [a-z0-9_-], starting with a letter".into())
        }
    }
}

/// A lead's server-assigned id: a UUIDv7, so ids sort roughly by creation time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct LeadId(uuid::Uuid);

impl LeadId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Err("is required".into());
        }
        uuid::Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| "is not a lead id (expected a UUID)".into())
    }
}

impl fmt::Display for LeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

/// An idempotency key supplied by the client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Empty means "no idempotency key".
    pub fn parse_optional(value: &str) -> Result<Option<Self>, String> {
        if value.is_empty() {
            Ok(None)
        } else if value.len() > 128 || value.chars().any(|c| c.is_control()) {
            Err("must be at most 128 printable characters".into())
        } else {
            Ok(Some(Self(value.to_owned())))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_validated() {
        assert!(StageKey::parse("closed_won").is_ok());
        assert!(StageKey::parse("closed-won").is_err());
        assert!(StageKey::parse("").is_err());
        assert!(StageKey::parse("1abc").is_err());
        assert!(StageKey::parse(&"a".repeat(64)).is_err());
        assert!(PipelineId::parse("enterprise-2026").is_ok());
        assert!(PipelineId::parse("Enterprise").is_err());
    }

    #[test]
    fn lead_ids_round_trip() {
        let id = LeadId::generate();
        assert_eq!(LeadId::parse(&id.to_string()), Ok(id));
        assert!(LeadId::parse("nope").is_err());
        assert_eq!(LeadId::parse(""), Err("is required".to_string()));
    }

    #[test]
    fn request_ids_are_optional_and_bounded() {
        assert_eq!(RequestId::parse_optional(""), Ok(None));
        assert!(RequestId::parse_optional(&"x".repeat(129)).is_err());
        assert!(RequestId::parse_optional("abc\n").is_err());
    }
}
