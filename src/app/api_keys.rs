//! API keys: creation, listing, revocation and the per-request check.
//!
//! A key reads `lp_<tenant>_<id>_<secret>`. `id` is 10 random base32 characters and `secret`
//! 52 (256 random bits); neither contains `_`, so the tenant (which may) is everything between
//! `lp_` and the last two underscores. The server finds the key's row by its primary key
//! `(tenant, id)` and compares the SHA-256 of the presented key with the stored hash in constant
//! time. The key itself is shown once, when it is created, and never stored.
//!
//! SHA-256 rather than a password hash (argon2, bcrypt): a password hash is slow on purpose, to
//! make guessing low-entropy passwords from a stolen hash expensive. A 256-bit random secret
//! cannot be guessed however fast the hash is, so a slow hash would only add latency to every
//! request without adding security.

use std::fmt;

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppError, Clock, RequestContext};
use crate::domain::ids::TenantId;
use crate::store::api_keys::{self, ApiKeyRow};
use crate::store::{Store, StoreError, from_micros, to_micros};

const PREFIX: &str = "lp_";
const ID_LEN: usize = 10;
/// 256 bits in base32 (5 bits a character).
const SECRET_LEN: usize = 52;
const SECRET_BYTES: usize = 32;
/// Labels are for people; keep them short.
pub const MAX_LABEL_LEN: usize = 200;

/// What a key may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads leads, history, streams, pipelines and forecasts.
    Reader,
    /// A reader that also creates, updates, deletes, moves and imports leads.
    Writer,
    /// A writer that also creates and updates pipelines.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's public identity, `<tenant>_<id>`: what `keys list` shows, what `keys revoke` takes
/// and (as `key:<tenant>_<id>`) the actor recorded on the changes the key makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName {
    pub tenant: TenantId,
    pub id: String,
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.tenant, self.id)
    }
}

impl KeyName {
    pub fn actor(&self) -> String {
        format!("key:{self}")
    }
}

/// The caller behind a valid, unrevoked key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: KeyName,
    pub role: Role,
}

impl Principal {
    pub fn context(&self) -> RequestContext {
        RequestContext {
            tenant: self.key.tenant.clone(),
            actor: self.key.actor(),
        }
    }
}

/// Why a presented key was refused. The messages are safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum KeyRejected {
    #[error("the API key is malformed: expected lp_<tenant>_<id>_<secret>")]
    Malformed,
    #[error("the API key is not valid")]
    Unknown,
    #[error("the API key was revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub name: KeyName,
    pub role: Role,
    pub label: String,
    pub create_time: chrono::DateTime<chrono::Utc>,
    pub revoke_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// A key that was just created. `key` is shown once and cannot be recovered later.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub info: KeyInfo,
    pub key: String,
}

/// The parts of a well-formed key.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub tenant: TenantId,
    pub id: &'a str,
    pub secret: &'a str,
}

fn is_base32(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// Splits `lp_<tenant>_<id>_<secret>`.
pub fn parse_key(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix(PREFIX)?;
    let (rest, secret) = rest.rsplit_once('_')?;
    let (tenant, id) = rest.rsplit_once('_')?;
    if !is_base32(id, ID_LEN) || !is_base32(secret, SECRET_LEN) {
        return None;
    }
    let tenant = TenantId::parse(tenant).ok()?;
    Some(ParsedKey { tenant, id, secret })
}

/// Parses the name that `keys revoke` takes: `<tenant>_<id>`, or a bare `<id>` (ids never
/// contain `_`). Returns the tenant if one was given.
pub fn parse_key_name(name: &str) -> Result<(Option<TenantId>, String), String> {
    let (tenant, id) = match name.rsplit_once('_') {
        Some((tenant, id)) => (
            Some(TenantId::parse(tenant).map_err(|e| format!("tenant {tenant:?}: {e}"))?),
            id,
        ),
        None => (None, name),
    };
    if !is_base32(id, ID_LEN) {
        return Err(format!(
            "{name:?} is not a key id: expected <tenant>_<id> or <id>, where <id> is {ID_LEN} characters of a-z and 2-7"
        ));
    }
    Ok((tenant, id.to_owned()))
}

fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lower-case RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer = 0u32;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], AppError> {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| AppError::Internal(format!("the OS random number generator failed: {e}")))?;
    Ok(bytes)
}

fn info(row: &ApiKeyRow) -> Result<KeyInfo, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("api key {}: {what}", row.id));
    Ok(KeyInfo {
        name: KeyName {
            tenant: TenantId::parse(&row.tenant_id).map_err(|e| corrupt(&e))?,
            id: row.id.clone(),
        },
        role: Role::parse(&row.role).ok_or_else(|| corrupt("unknown role"))?,
        label: row.label.clone(),
        create_time: from_micros(row.create_time),
        revoke_time: row.revoke_time.map(from_micros),
    })
}

#[derive(Clone)]
pub struct KeyService {
    store: Store,
    clock: Clock,
}

impl KeyService {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// Creates a key. The returned `key` is the only copy.
    pub async fn create(
        &self,
        tenant: &TenantId,
        role: Role,
        label: &str,
    ) -> Result<CreatedKey, AppError> {
        let label = label.trim();
        if label.chars().count() > MAX_LABEL_LEN {
            return Err(AppError::invalid(
                "label",
                format!("must be at most {MAX_LABEL_LEN} characters"),
            ));
        }
        // 50 bits of id: a collision within one tenant is practically impossible, and the
        // primary key would refuse one anyway.
        let id = base32(&random::<7>()?)[..ID_LEN].to_owned();
        let secret = base32(&random::<SECRET_BYTES>()?);
        debug_assert_eq!(secret.len(), SECRET_LEN);
        let key = format!("{PREFIX}{tenant}_{id}_{secret}");
        let row = ApiKeyRow {
            tenant_id: tenant.to_string(),
            id,
            role: role.as_str().to_owned(),
            secret_hash: hash(&key),
            label: label.to_owned(),
            create_time: to_micros(self.clock.now()),
            revoke_time: None,
        };
        api_keys::insert(self.store.writer(), row.clone()).await?;
        Ok(CreatedKey {
            info: info(&row)?,
            key,
        })
    }

    /// The keys of `tenant`, or of every tenant, revoked ones included; never a key's secret,
    /// which is not stored.
    pub async fn list(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyInfo>, AppError> {
        let rows = api_keys::list(self.store.reader(), tenant).await?;
        Ok(rows.iter().map(info).collect::<Result<_, _>>()?)
    }

    /// Revokes the key named `<tenant>_<id>` or `<id>`. A bare id must name exactly one key.
    /// Returns the key as it is now; revoking a revoked key changes nothing.
    pub async fn revoke(&self, name: &str) -> Result<KeyInfo, AppError> {
        let (tenant, id) = parse_key_name(name).map_err(|e| AppError::invalid("id", e))?;
        let db = self.store.writer();
        let tenant = match tenant {
            Some(tenant) => tenant,
            None => {
                let found = api_keys::find_in_any_tenant(db, &id).await?;
                match found.as_slice() {
                    [] => return Err(key_not_found(name)),
                    [row] => info(row)?.name.tenant,
                    rows => {
                        let names: Vec<String> = rows
                            .iter()
                            .map(|r| format!("{}_{}", r.tenant_id, r.id))
                            .collect();
                        return Err(AppError::invalid(
                            "id",
                            format!(
                                "{id} names keys in several tenants; give one of {}",
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
        };
        api_keys::revoke(db, &tenant, &id, to_micros(self.clock.now())).await?;
        let row = api_keys::find(db, &tenant, &id)
            .await?
            .ok_or_else(|| key_not_found(name))?;
        Ok(info(&row)?)
    }

    /// Whether any key, in any tenant, is not revoked. Reads only.
    pub async fn any_active(&self) -> Result<bool, StoreError> {
        api_keys::any_active(self.store.reader()).await
    }

    /// [`Self::any_active`] on a database that may not be migrated yet: the start-up check runs
    /// before anything else has created the keys table.
    pub async fn any_active_after_migrating(&self) -> Result<bool, StoreError> {
        self.store.migrate().await?;
        self.any_active().await
    }

    /// Whether the key still exists and is not revoked: for streams, which outlive the check
    /// made when they opened.
    pub async fn is_active(&self, name: &KeyName) -> Result<bool, StoreError> {
        let row = api_keys::find(self.store.reader(), &name.tenant, &name.id).await?;
        Ok(row.is_some_and(|row| row.revoke_time.is_none()))
    }

    /// Checks a presented key against the database: one primary-key read per call, so a
    /// revocation is seen by the next request on every replica.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, KeyRejected> {
        let parsed = parse_key(key).ok_or(KeyRejected::Malformed)?;
        let row = api_keys::find(self.store.reader(), &parsed.tenant, parsed.id)
            .await?
            .ok_or(KeyRejected::Unknown)?;
        let presented = hash(key);
        if !bool::from(presented.as_bytes().ct_eq(row.secret_hash.as_bytes())) {
            return Err(KeyRejected::Unknown);
        }
        if row.revoke_time.is_some() {
            return Err(KeyRejected::Revoked);
        }
        let role = Role::parse(&row.role).ok_or_else(|| {
            KeyRejected::Store(StoreError::Corrupt(format!(
                "api key {}: unknown role {:?}",
                row.id, row.role
            )))
        })?;
        Ok(Principal {
            key: KeyName {
                tenant: parsed.tenant,
                id: row.id,
            },
            role,
        })
    }
}

fn key_not_found(name: &str) -> AppError {
    AppError::NotFound {
        resource: "api key",
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"fo"), "mzxq");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(&[0u8; SECRET_BYTES]).len(), SECRET_LEN);
    }

    #[test]
    fn keys_parse_even_when_the_tenant_has_underscores() {
        let secret = "a".repeat(SECRET_LEN);
        let key = format!("lp_acme_eu_west_abcdefgh23_{secret}");
        let parsed = parse_key(&key).expect("parses");
        assert_eq!(parsed.tenant.as_str(), "acme_eu_west");
        assert_eq!(parsed.id, "abcdefgh23");
        assert_eq!(parsed.secret, secret);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let secret = "a".repeat(SECRET_LEN);
        for key in [
            String::new(),
            "lp_".into(),
            format!("acme_abcdefgh23_{secret}"),
            format!("lp_abcdefgh23_{secret}"),
            format!("lp_acme_abcdefgh2_{secret}"),
            format!("lp_acme_abcdefgh23_{}", &secret[1..]),
            format!("lp_acme_ABCDEFGH23_{secret}"),
            format!("lp_Acme_abcdefgh23_{secret}"),
            format!("lp_acme_abcdefgh23_{secret}_"),
            format!("lp__abcdefgh23_{secret}"),
        ] {
            assert_eq!(parse_key(&key), None, "{key}");
        }
    }

    #[test]
    fn key_names_take_a_tenant_or_not() {
        let (tenant, id) = parse_key_name("acme_eu_abcdefgh23").unwrap();
        assert_eq!(tenant.unwrap().as_str(), "acme_eu");
        assert_eq!(id, "abcdefgh23");
        let (tenant, id) = parse_key_name("abcdefgh23").unwrap();
        assert!(tenant.is_none());
        assert_eq!(id, "abcdefgh23");
        assert!(parse_key_name("acme_short").is_err());
        assert!(parse_key_name("Bad_abcdefgh23").is_err());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Admin);
        for role in [Role::Reader, Role::Writer, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }
}
