//! Sort orders and opaque page tokens for List methods (AIP-132, AIP-158).
//!
//! Pages are keyset-based: a token carries the sort key and id of the last item returned, so
//! that inserts and updates between pages neither skip nor repeat items the way offsets would.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::filter;
use super::lead::Lead;

/// The envelope version written into new tokens. Bump it when a cursor's meaning changes, so
/// that tokens issued by an older server are refused instead of misread.
const TOKEN_VERSION: u32 = 1;
/// Real tokens are well under this; the bound keeps garbage from costing a large decode.
const MAX_TOKEN_CHARS: usize = 4096;

pub const MALFORMED_TOKEN: &str = "page_token is malformed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortField {
    CreateTime,
    UpdateTime,
    Amount,
    WinProbability,
    /// win_probability × amount: the priority order.
    ExpectedValue,
}

impl SortField {
    /// Every sortable field, in the order listed in error messages. Adding a field means adding
    /// a variant here and in `name`; parsing and messages follow.
    pub const ALL: &[SortField] = &[
        Self::CreateTime,
        Self::UpdateTime,
        Self::Amount,
        Self::WinProbability,
        Self::ExpectedValue,
    ];

    /// The field's name in `order_by`.
    pub fn name(self) -> &'static str {
        match self {
            Self::CreateTime => "create_time",
            Self::UpdateTime => "update_time",
            Self::Amount => "amount",
            Self::WinProbability => "win_probability",
            Self::ExpectedValue => "expected_value",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Whether `key` is the kind of key this field sorts by; guards against forged tokens.
    pub fn accepts(self, key: &SortKey) -> bool {
        matches!(
            (self, key),
            (Self::CreateTime | Self::UpdateTime, SortKey::Micros(_))
                | (Self::Amount, SortKey::Amount { .. })
                | (
                    Self::WinProbability | Self::ExpectedValue,
                    SortKey::Probability(_)
                )
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderBy {
    pub field: SortField,
    pub descending: bool,
}

impl Default for OrderBy {
    fn default() -> Self {
        Self {
            field: SortField::CreateTime,
            descending: false,
        }
    }
}

impl OrderBy {
    /// The canonical text: the field name, followed by ` desc` when descending.
    pub fn as_text(&self) -> String {
        if self.descending {
            format!("{} desc", self.field.name())
        } else {
            self.field.name().to_string()
        }
    }
}

impl fmt::Display for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_text())
    }
}

/// Parses `order_by`: one field name, optionally followed by `asc` or `desc`. Blank means
/// `create_time` ascending. Ties are broken by id by the caller, so only one field is accepted.
pub fn parse_order_by(input: &str) -> Result<OrderBy, String> {
    let words: Vec<&str> = input.split_whitespace().collect();
    let parsed = match words.as_slice() {
        [] => Some(OrderBy::default()),
        [field] => SortField::from_name(field).map(|field| OrderBy {
            field,
            descending: false,
        }),
        [field, direction @ ("asc" | "desc")] => SortField::from_name(field).map(|field| OrderBy {
            field,
            descending: *direction == "desc",
        }),
        _ => None,
    };
    parsed.ok_or_else(|| {
        let names: Vec<&str> = SortField::ALL.iter().map(|f| f.name()).collect();
        format!(
            "unsupported order_by {:?}; use one of {}, optionally followed by \" desc\" or \" asc\"",
            input.trim(),
            names.join(", ")
        )
    })
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    c: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u32,
    c: serde_json::Value,
}

/// Encodes a cursor as an opaque, URL-safe page token.
///
/// Tokens are not signed: they only say where to resume, and the request's own filter is
/// still applied, so a forged token can reveal nothing a fresh request could not.
pub fn encode_page_token<T: Serialize>(cursor: &T) -> String {
    let envelope = EnvelopeOut {
        v: TOKEN_VERSION,
        c: cursor,
    };
    // Serializing plain data to JSON fails only for non-string map keys, which cursors do not
    // have; an empty token would end the listing rather than crash the server.
    let json = serde_json::to_vec(&envelope).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a token made by [`encode_page_token`]. Every kind of damage is reported as a
/// malformed token, since clients are expected to pass tokens back verbatim.
pub fn decode_page_token<T: DeserializeOwned>(token: &str) -> Result<T, String> {
    let malformed = || MALFORMED_TOKEN.to_string();
    if token.len() > MAX_TOKEN_CHARS {
        return Err(malformed());
    }
    let json = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let envelope: EnvelopeIn = serde_json::from_slice(&json).map_err(|_| malformed())?;
    if envelope.v != TOKEN_VERSION {
        return Err(
            "page_token was issued by an incompatible server version; list again without it"
                .to_string(),
        );
    }
    serde_json::from_value(envelope.c).map_err(|_| malformed())
}

/// The resume point of a ListLeads page.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LeadCursor {
    /// [`query_fingerprint`] of the request that issued the token.
    pub query: String,
    /// The sort key of the last lead returned.
    pub key: SortKey,
    /// The id of the last lead returned; breaks ties between equal sort keys.
    pub last_id: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SortKey {
    /// A timestamp in microseconds since the Unix epoch.
    Micros(i64),
    Amount {
        units: i64,
        nanos: i32,
    },
    /// Stored as text: serde_json's default float parsing may be off by one ulp, and a cursor
    /// that is off by one ulp can skip or repeat leads.
    Probability(#[serde(with = "exact_f64")] f64),
}

impl SortKey {
    /// The key `lead` sorts by under `field`: a lead without an amount sorts as zero.
    pub fn of(lead: &Lead, field: SortField) -> Self {
        match field {
            SortField::CreateTime => Self::Micros(lead.create_time.timestamp_micros()),
            SortField::UpdateTime => Self::Micros(lead.update_time.timestamp_micros()),
            SortField::Amount => {
                let (units, nanos) = lead
                    .fields
                    .amount
                    .as_ref()
                    .map_or((0, 0), |m| (m.units, m.nanos));
                Self::Amount { units, nanos }
            }
            SortField::WinProbability => Self::Probability(lead.win_probability),
            SortField::ExpectedValue => Self::Probability(lead.expected_value()),
        }
    }

    /// Orders keys of one field; keys of different fields (which a checked cursor never
    /// pairs) order by field.
    fn cmp_key(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Micros(a), Self::Micros(b)) => a.cmp(b),
            (Self::Amount { units, nanos }, Self::Amount { units: u, nanos: n }) => {
                (units, nanos).cmp(&(u, n))
            }
            (Self::Probability(a), Self::Probability(b)) => a.total_cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Micros(_) => 0,
            Self::Amount { .. } => 1,
            Self::Probability(_) => 2,
        }
    }
}

/// One page of leads chosen from leads offered one by one in any order: those after the
/// cursor, first in the requested order (ties broken by id), and a count of every lead
/// offered. Holds at most one page plus one lead, however many are offered.
pub struct PageCollector {
    order: OrderBy,
    after: Option<(SortKey, String)>,
    limit: usize,
    kept: BinaryHeap<Ranked>,
    offered: u64,
}

struct Ranked {
    key: SortKey,
    id: String,
    descending: bool,
    lead: Lead,
}

impl Ranked {
    fn position(&self, other: &Self) -> Ordering {
        let ascending = self
            .key
            .cmp_key(&other.key)
            .then_with(|| self.id.cmp(&other.id));
        if self.descending {
            ascending.reverse()
        } else {
            ascending
        }
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.position(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.position(other)
    }
}

impl PageCollector {
    /// Keeps up to `limit` leads after `after` (the sort key and id of the previous page's
    /// last lead).
    pub fn new(order: OrderBy, after: Option<(SortKey, String)>, limit: usize) -> Self {
        Self {
            order,
            after,
            limit,
            kept: BinaryHeap::with_capacity(limit + 1),
            offered: 0,
        }
    }

    pub fn offer(&mut self, lead: Lead) {
        self.offered += 1;
        let ranked = Ranked {
            key: SortKey::of(&lead, self.order.field),
            id: lead.id.to_string(),
            descending: self.order.descending,
            lead,
        };
        if let Some((key, id)) = &self.after {
            let mut ascending = ranked
                .key
                .cmp_key(key)
                .then_with(|| ranked.id.as_str().cmp(id));
            if self.order.descending {
                ascending = ascending.reverse();
            }
            if ascending != Ordering::Greater {
                return;
            }
        }
        self.kept.push(ranked);
        if self.kept.len() > self.limit {
            self.kept.pop();
        }
    }

    /// The kept leads in order, and how many were offered.
    pub fn finish(self) -> (Vec<Lead>, u64) {
        let leads = self
            .kept
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.lead)
            .collect();
        (leads, self.offered)
    }
}

/// Identifies a listing query, so that a page token is only honoured by requests with the same
/// filter and order as the request that issued it.
pub fn query_fingerprint(filter: &str, order: &OrderBy) -> String {
    filter::short_hash(&format!(
        "leads\nfilter={}\norder_by={}",
        filter::fingerprint(filter),
        order.as_text()
    ))
}

/// Decodes a ListLeads page token and checks that it belongs to this filter and order.
pub fn decode_lead_cursor(
    token: &str,
    filter: &str,
    order: &OrderBy,
) -> Result<LeadCursor, String> {
    let cursor: LeadCursor = decode_page_token(token)?;
    if cursor.query != query_fingerprint(filter, order) {
        return Err(
            "page_token does not match the request: filter and order_by must be unchanged"
                .to_string(),
        );
    }
    if !order.field.accepts(&cursor.key) {
        return Err(MALFORMED_TOKEN.to_string());
    }
    Ok(cursor)
}

mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        // Rust prints the shortest text that parses back to the same f64.
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(field: SortField, descending: bool) -> OrderBy {
        OrderBy { field, descending }
    }

    proptest! {
        /// Paging through leads offered in any order gives them all once, sorted, with ties
        /// broken by id, and counts every lead on every page.
        #[test]
        fn collected_pages_are_the_sorted_leads(
            amounts in proptest::collection::vec(0i64..5, 0..40),
            descending: bool,
            page_size in 1usize..7,
            rotate in 0usize..40,
        ) {
            let mut leads: Vec<Lead> = amounts
                .iter()
                .map(|&units| {
                    let mut lead = crate::criteria::testing::lead();
                    lead.id = crate::ids::LeadId::generate();
                    lead.fields.amount = (units > 0)
                        .then(|| crate::money::Money::parse("EUR", units, 0).unwrap());
                    lead
                })
                .collect();
            let by = order(SortField::Amount, descending);
            let mut expected: Vec<(SortKey, String)> = leads
                .iter()
                .map(|l| (SortKey::of(l, by.field), l.id.to_string()))
                .collect();
            expected.sort_by(|a, b| a.0.cmp_key(&b.0).then_with(|| a.1.cmp(&b.1)));
            if descending {
                expected.reverse();
            }
            if !leads.is_empty() {
                let at = rotate % leads.len();
                leads.rotate_left(at);
            }
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let mut collector = PageCollector::new(by, after.clone(), page_size + 1);
                for lead in &leads {
                    collector.offer(lead.clone());
                }
                let (mut page, total) = collector.finish();
                prop_assert_eq!(total, leads.len() as u64);
                let more = page.len() > page_size;
                page.truncate(page_size);
                seen.extend(page.iter().map(|l| (SortKey::of(l, by.field), l.id.to_string())));
                if !more {
                    break;
                }
                let last = page.last().unwrap();
                after = Some((SortKey::of(last, by.field), last.id.to_string()));
            }
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn order_by_parses_supported_values() {
        assert_eq!(parse_order_by(""), Ok(order(SortField::CreateTime, false)));
        assert_eq!(
            parse_order_by("  "),
            Ok(order(SortField::CreateTime, false))
        );
        assert_eq!(
            parse_order_by("create_time"),
            Ok(order(SortField::CreateTime, false))
        );
        assert_eq!(
            parse_order_by("update_time desc"),
            Ok(order(SortField::UpdateTime, true))
        );
        assert_eq!(
            parse_order_by("amount desc"),
            Ok(order(SortField::Amount, true))
        );
        assert_eq!(
            parse_order_by(" amount   asc "),
            Ok(order(SortField::Amount, false))
        );
        assert_eq!(
            parse_order_by("win_probability desc"),
            Ok(order(SortField::WinProbability, true))
        );
    }

    #[test]
    fn order_by_rejects_everything_else() {
        for bad in [
            "amount descending",
            "AMOUNT",
            "amount DESC",
            "amount desc extra",
            "amount,create_time",
            "amount desc, create_time",
            "stage",
            "desc",
        ] {
            let e = parse_order_by(bad).unwrap_err();
            assert!(
                e.contains("create_time, update_time, amount, win_probability"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn order_by_text_round_trips() {
        for &field in SortField::ALL {
            for descending in [false, true] {
                let o = order(field, descending);
                assert_eq!(parse_order_by(&o.as_text()), Ok(o));
            }
        }
        assert_eq!(order(SortField::Amount, true).as_text(), "amount desc");
        assert_eq!(order(SortField::Amount, false).to_string(), "amount");
    }

    fn sample_cursor() -> LeadCursor {
        LeadCursor {
            query: query_fingerprint("stage = \"won\"", &order(SortField::Amount, true)),
            key: SortKey::Amount {
                units: 10_000,
                nanos: 500_000_000,
            },
            last_id: "0190b6a2-7c1e-7000-8000-000000000001".into(),
        }
    }

    #[test]
    fn tokens_are_url_safe_and_round_trip() {
        let cursor = sample_cursor();
        let token = encode_page_token(&cursor);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(decode_page_token::<LeadCursor>(&token), Ok(cursor));
    }

    #[test]
    fn damaged_tokens_are_malformed() {
        let token = encode_page_token(&sample_cursor());
        let truncated = &token[..token.len() - 5];
        let padded = format!("{token}==");
        let not_json = URL_SAFE_NO_PAD.encode(b"hello");
        let wrong_shape = URL_SAFE_NO_PAD.encode(br#"{"v":1,"c":{"query":1}}"#);
        let too_long = "A".repeat(MAX_TOKEN_CHARS + 1);
        for bad in [
            "",
            "!!!",
            "a",
            truncated,
            &padded,
            &not_json,
            &wrong_shape,
            &too_long,
        ] {
            assert_eq!(
                decode_page_token::<LeadCursor>(bad),
                Err(MALFORMED_TOKEN.to_string()),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_of_another_version_are_refused() {
        let token = URL_SAFE_NO_PAD.encode(br#"{"v":2,"c":null}"#);
        let e = decode_page_token::<LeadCursor>(&token).unwrap_err();
        assert!(e.contains("incompatible"), "{e}");
    }

    #[test]
    fn probabilities_round_trip_exactly() {
        for p in [0.1, 1.0 / 3.0, 0.7000000000000001, 5e-324, 0.0, 1.0] {
            let cursor = LeadCursor {
                query: String::new(),
                key: SortKey::Probability(p),
                last_id: "x".into(),
            };
            let back: LeadCursor = decode_page_token(&encode_page_token(&cursor)).unwrap();
            assert_eq!(back.key, SortKey::Probability(p));
        }
    }

    #[test]
    fn query_fingerprint_binds_filter_and_order() {
        let by_amount = order(SortField::Amount, true);
        let fp = query_fingerprint("stage = \"won\"", &by_amount);
        assert_eq!(fp.len(), 16);
        assert_eq!(fp, query_fingerprint(" stage=\"won\" ", &by_amount));
        assert_ne!(fp, query_fingerprint("stage = \"lost\"", &by_amount));
        assert_ne!(
            fp,
            query_fingerprint("stage = \"won\"", &order(SortField::Amount, false))
        );
    }

    #[test]
    fn lead_cursor_must_match_the_request() {
        let by_amount = order(SortField::Amount, true);
        let token = encode_page_token(&sample_cursor());
        assert_eq!(
            decode_lead_cursor(&token, "stage = \"won\"", &by_amount),
            Ok(sample_cursor())
        );
        let e = decode_lead_cursor(&token, "", &by_amount).unwrap_err();
        assert!(e.contains("does not match"), "{e}");

        let forged = LeadCursor {
            key: SortKey::Micros(1),
            ..sample_cursor()
        };
        assert_eq!(
            decode_lead_cursor(&encode_page_token(&forged), "stage = \"won\"", &by_amount),
            Err(MALFORMED_TOKEN.to_string())
        );
    }

    fn sort_key() -> impl Strategy<Value = SortKey> {
        prop_oneof![
            any::<i64>().prop_map(SortKey::Micros),
            (any::<i64>(), 0..1_000_000_000i32)
                .prop_map(|(units, nanos)| SortKey::Amount { units, nanos }),
            any::<f64>()
                .prop_filter("finite", |p| p.is_finite())
                .prop_map(SortKey::Probability),
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics(token in "\\PC{0,200}") {
            let _ = decode_page_token::<LeadCursor>(&token);
            let _ = decode_page_token::<serde_json::Value>(&token);
        }

        #[test]
        fn decode_never_panics_on_base64_garbage(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_page_token::<LeadCursor>(&URL_SAFE_NO_PAD.encode(bytes));
        }

        #[test]
        fn cursors_round_trip(query in "\\PC{0,40}", key in sort_key(), last_id in "\\PC{0,40}") {
            let cursor = LeadCursor { query, key, last_id };
            let token = encode_page_token(&cursor);
            prop_assert_eq!(decode_page_token::<LeadCursor>(&token), Ok(cursor));
        }
    }
}
