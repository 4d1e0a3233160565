//! The subset of AIP-160 filters accepted by ListLeads (see `ListLeadsRequest.filter`).
//!
//! Parsing is pure: the result is a small tree that the persistence layer translates into a
//! query. Unlike full AIP-160, AND binds tighter than OR, because that is what the API
//! documents and what users of SQL-like languages expect.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::lead::{Lead, validate_label_key};
use super::money::parse_decimal_amount;

/// Longer filters are refused before lexing, which also bounds the token count.
pub const MAX_FILTER_CHARS: usize = 2000;
/// Parentheses and negations nest the parser's recursion; this bounds its stack use.
pub const MAX_NESTING: usize = 32;
/// Each term becomes a condition in the database query; this bounds its cost.
pub const MAX_TERMS: usize = 64;

const SUPPORTED_FIELDS: &str =
    "stage, owner, pipeline_id, source, amount, create_time and labels.<key>";

/// A parsed filter. `And` and `Or` hold at least two operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        field: FilterField,
        op: CompareOp,
        value: FilterValue,
    },
    /// `labels.<key>:*`
    LabelPresent(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterField {
    Stage,
    Owner,
    PipelineId,
    Source,
    Amount,
    CreateTime,
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    Text(String),
    /// Major units and nanos, as in google.type.Money.
    Amount {
        units: i64,
        nanos: i32,
    },
    Time(DateTime<Utc>),
}

/// A filter syntax or validation error, located at a 0-based character offset of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct FilterError {
    pub message: String,
    pub position: usize,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            position,
        }
    }
}

impl Filter {
    /// Whether `lead` passes the filter, with the answer the store's query gives for the same
    /// lead: a lead without an amount compares as zero, `labels.k != "v"` holds when the lead
    /// has no label `k` with value `v`. For leads that are not rows, such as a lead as it
    /// stood at a past time.
    pub fn matches(&self, lead: &Lead) -> bool {
        match self {
            Self::And(terms) => terms.iter().all(|t| t.matches(lead)),
            Self::Or(terms) => terms.iter().any(|t| t.matches(lead)),
            Self::Not(inner) => !inner.matches(lead),
            Self::LabelPresent(key) => lead.fields.labels.contains_key(key),
            Self::Compare { field, op, value } => compare(lead, field, *op, value),
        }
    }
}

fn compare(lead: &Lead, field: &FilterField, op: CompareOp, value: &FilterValue) -> bool {
    let text = match field {
        FilterField::Stage => Some(lead.stage.as_str()),
        FilterField::Owner => Some(lead.fields.owner.as_str()),
        FilterField::PipelineId => Some(lead.pipeline_id.as_str()),
        FilterField::Source => Some(lead.fields.source.as_str()),
        FilterField::Amount | FilterField::CreateTime | FilterField::Label(_) => None,
    };
    match (field, value) {
        (FilterField::Label(key), FilterValue::Text(wanted)) => {
            let has = lead.fields.labels.get(key) == Some(wanted);
            if op == CompareOp::Ne { !has } else { has }
        }
        (FilterField::Amount, FilterValue::Amount { units, nanos }) => {
            let own = lead
                .fields
                .amount
                .as_ref()
                .map_or((0, 0), |m| (m.units, m.nanos));
            op.holds(own.cmp(&(*units, *nanos)))
        }
        (FilterField::CreateTime, FilterValue::Time(time)) => op.holds(
            lead.create_time
                .timestamp_micros()
                .cmp(&time.timestamp_micros()),
        ),
        (_, FilterValue::Text(wanted)) => {
            text.is_some_and(|own| op.holds(own.cmp(wanted.as_str())))
        }
        // The parser only pairs fields with values of their type; anything else matches nothing.
        _ => false,
    }
}

impl CompareOp {
    /// Whether `left op right` holds, given how left compares with right.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Self::Eq => ordering == Equal,
            Self::Ne => ordering != Equal,
            Self::Lt => ordering == Less,
            Self::Le => ordering != Greater,
            Self::Gt => ordering == Greater,
            Self::Ge => ordering != Less,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

impl FilterField {
    /// The field's name as written in a filter, e.g. `pipeline_id` or `labels.region`.
    pub fn name(&self) -> String {
        match self {
            Self::Stage => "stage".into(),
            Self::Owner => "owner".into(),
            Self::PipelineId => "pipeline_id".into(),
            Self::Source => "source".into(),
            Self::Amount => "amount".into(),
            Self::CreateTime => "create_time".into(),
            Self::Label(key) => format!("labels.{key}"),
        }
    }

    fn is_text(&self) -> bool {
        !matches!(self, Self::Amount | Self::CreateTime)
    }
}

/// Parses a ListLeads filter. A blank filter matches everything and yields `Ok(None)`.
pub fn parse_filter(input: &str) -> Result<Option<Filter>, FilterError> {
    if input.chars().nth(MAX_FILTER_CHARS).is_some() {
        return Err(FilterError::new(
            MAX_FILTER_CHARS,
            format!("filter is longer than {MAX_FILTER_CHARS} characters"),
        ));
    }
    let (tokens, end) = lex(input)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        tokens,
        next: 0,
        end,
        depth: 0,
        terms: 0,
    };
    let filter = parser.parse_or()?;
    if let Some(token) = parser.peek() {
        let message = match token.kind {
            Tok::RParen => "unbalanced parentheses: this `)` has no matching `(`".to_string(),
            _ => format!(
                "unexpected {}; expected AND, OR or the end of the filter",
                token.kind.describe()
            ),
        };
        return Err(FilterError::new(token.pos, message));
    }
    Ok(Some(filter))
}

/// A short, stable hash of the filter's meaning, to bind page tokens to the filter they were
/// issued for. Filters differing only in layout (spacing, `10` vs `10.0`, `-` vs `NOT`) share a
/// fingerprint, so a client that reformats its filter keeps its place.
pub fn fingerprint(input: &str) -> String {
    let normalized = match parse_filter(input) {
        Ok(Some(filter)) => format!("parsed:{filter}"),
        Ok(None) => "parsed:".to_string(),
        // Invalid filters never reach pagination; hashing the raw text just keeps this total.
        Err(_) => format!("raw:{input}"),
    };
    short_hash(&normalized)
}

/// The first 16 hex digits of the SHA-256 of `text`.
pub(crate) fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders the canonical filter text; parsing it yields the same tree.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn operand(f: &mut fmt::Formatter<'_>, filter: &Filter) -> fmt::Result {
            // Compound operands are always parenthesized so that the tree shape survives a
            // round trip (no flattening of `(a AND b) AND c`).
            match filter {
                Filter::And(_) | Filter::Or(_) => write!(f, "({filter})"),
                _ => write!(f, "{filter}"),
            }
        }
        fn join(f: &mut fmt::Formatter<'_>, items: &[Filter], keyword: &str) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, " {keyword} ")?;
                }
                operand(f, item)?;
            }
            Ok(())
        }
        match self {
            Self::And(items) => join(f, items, "AND"),
            Self::Or(items) => join(f, items, "OR"),
            Self::Not(inner) => {
                write!(f, "NOT ")?;
                operand(f, inner)
            }
            Self::LabelPresent(key) => write!(f, "labels.{key}:*"),
            Self::Compare { field, op, value } => {
                write!(f, "{} {} ", field.name(), op.as_str())?;
                match value {
                    FilterValue::Text(text) => write_quoted(f, text),
                    FilterValue::Amount { units, nanos } => {
                        if *nanos == 0 {
                            write!(f, "{units}")
                        } else {
                            let fraction = format!("{nanos:09}");
                            write!(f, "{units}.{}", fraction.trim_end_matches('0'))
                        }
                    }
                    FilterValue::Time(time) => {
                        write_quoted(f, &time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                    }
                }
            }
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    /// `-` at the start of a token: AIP-160's short form of NOT.
    Minus,
    Op(CompareOp),
    /// `:`, the AIP-160 "has" operator.
    Has,
    Str(String),
    /// Field names, unquoted literals, `*` and the keywords AND, OR, NOT.
    Word(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Self::LParen => "`(`".into(),
            Self::RParen => "`)`".into(),
            Self::Minus => "`-`".into(),
            Self::Op(op) => format!("`{}`", op.as_str()),
            Self::Has => "`:`".into(),
            Self::Str(s) => format!("the string {}", truncate_for_message(s)),
            Self::Word(w) => format!("`{}`", truncate(w)),
        }
    }
}

/// Keeps error messages short when the offending token is long.
fn truncate(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

fn truncate_for_message(text: &str) -> String {
    format!("{:?}", truncate(text))
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    /// Character offset of the token's first character.
    pos: usize,
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '=' | '!' | '<' | '>' | ':' | '"')
}

/// Splits the input into tokens; also returns the input length in characters, the position
/// reported for errors at the end of the input.
fn lex(input: &str) -> Result<(Vec<Token>, usize), FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let next = chars.get(i + 1).copied();
        let kind = match c {
            _ if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '-' => Tok::Minus,
            ':' => Tok::Has,
            '=' => Tok::Op(CompareOp::Eq),
            '!' if next == Some('=') => {
                i += 1;
                Tok::Op(CompareOp::Ne)
            }
            '!' => {
                return Err(FilterError::new(
                    start,
                    "unexpected `!`; did you mean `!=`?",
                ));
            }
            '<' | '>' => {
                let or_equal = next == Some('=');
                if or_equal {
                    i += 1;
                }
                Tok::Op(match (c, or_equal) {
                    ('<', false) => CompareOp::Lt,
                    ('<', true) => CompareOp::Le,
                    ('>', false) => CompareOp::Gt,
                    _ => CompareOp::Ge,
                })
            }
            '"' => {
                let (text, after) = lex_string(&chars, start)?;
                tokens.push(Token {
                    kind: Tok::Str(text),
                    pos: start,
                });
                i = after;
                continue;
            }
            _ => {
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Tok::Word(chars[start..i].iter().collect()),
                    pos: start,
                });
                continue;
            }
        };
        tokens.push(Token { kind, pos: start });
        i += 1;
    }
    Ok((tokens, chars.len()))
}

/// Lexes the string starting with the quote at `start`; returns its text and the index after
/// the closing quote.
fn lex_string(chars: &[char], start: usize) -> Result<(String, usize), FilterError> {
    let mut text = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(FilterError::new(
                    start,
                    "unterminated string: missing closing `\"`",
                ));
            }
            Some('"') => return Ok((text, i + 1)),
            Some('\\') => match chars.get(i + 1) {
                Some(&c @ ('"' | '\\')) => {
                    text.push(c);
                    i += 2;
                }
                Some(c) => {
                    return Err(FilterError::new(
                        i,
                        format!("unsupported escape `\\{c}`; only `\\\"` and `\\\\` are allowed"),
                    ));
                }
                None => {
                    return Err(FilterError::new(
                        start,
                        "unterminated string: missing closing `\"`",
                    ));
                }
            },
            Some(&c) => {
                text.push(c);
                i += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
//
//   or_expr  := and_expr { "OR" and_expr }
//   and_expr := unary { ["AND"] unary }          -- adjacency is an implicit AND
//   unary    := ("NOT" | "-") unary | primary
//   primary  := "(" or_expr ")" | restriction
//   restriction := field op value | "labels." key ":" "*"

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    end: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        if token.is_some() {
            self.next += 1;
        }
        token
    }

    fn peek_is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Tok::Word(w), .. }) if w == word)
    }

    /// Whether the next token can begin a term, so that it continues an implicit AND.
    fn peek_starts_term(&self) -> bool {
        match self.peek().map(|t| &t.kind) {
            Some(Tok::LParen | Tok::Minus) => true,
            Some(Tok::Word(w)) => w != "OR" && w != "AND",
            _ => false,
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(FilterError::new(
                pos,
                format!("filter is nested deeper than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut items = vec![self.parse_and()?];
        while self.peek_is_word("OR") {
            self.bump();
            items.push(self.parse_and()?);
        }
        Ok(collapse(items, Filter::Or))
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut items = vec![self.parse_unary()?];
        loop {
            if self.peek_is_word("AND") {
                self.bump();
            } else if !self.peek_starts_term() {
                break;
            }
            items.push(self.parse_unary()?);
        }
        Ok(collapse(items, Filter::And))
    }

    fn parse_unary(&mut self) -> Result<Filter, FilterError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.expected_term_at_end());
        };
        let negated = match &token.kind {
            Tok::Minus => true,
            Tok::Word(w) => w == "NOT",
            _ => false,
        };
        if !negated {
            return self.parse_primary();
        }
        self.bump();
        self.enter(token.pos)?;
        let inner = self.parse_unary()?;
        self.leave();
        Ok(Filter::Not(Box::new(inner)))
    }

    fn parse_primary(&mut self) -> Result<Filter, FilterError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.expected_term_at_end());
        };
        match &token.kind {
            Tok::LParen => {
                self.bump();
                self.enter(token.pos)?;
                let inner = self.parse_or()?;
                self.leave();
                match self.bump() {
                    Some(Token {
                        kind: Tok::RParen, ..
                    }) => Ok(inner),
                    None => Err(FilterError::new(
                        token.pos,
                        "unbalanced parentheses: this `(` is never closed",
                    )),
                    Some(other) => Err(FilterError::new(
                        other.pos,
                        format!(
                            "unexpected {}; expected `)` to close the `(` at position {}",
                            other.kind.describe(),
                            token.pos
                        ),
                    )),
                }
            }
            Tok::RParen if self.depth == 0 => Err(FilterError::new(
                token.pos,
                "unbalanced parentheses: this `)` has no matching `(`",
            )),
            Tok::Word(w) if w == "AND" || w == "OR" => Err(FilterError::new(
                token.pos,
                format!("expected a term before {w}"),
            )),
            Tok::Word(name) => {
                self.bump();
                self.parse_restriction(name, token.pos)
            }
            other => Err(FilterError::new(
                token.pos,
                format!(
                    "expected a term such as `stage = \"proposal\"`, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn expected_term_at_end(&self) -> FilterError {
        FilterError::new(self.end, "expected a term, found the end of the filter")
    }

    /// Parses the rest of a restriction whose field name (at `field_pos`) was just consumed.
    fn parse_restriction(&mut self, name: &str, field_pos: usize) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError::new(
                field_pos,
                format!("filter has more than {MAX_TERMS} terms"),
            ));
        }
        let field = resolve_field(name, field_pos)?;

        let op_token = self.bump();
        let (op, op_pos) = match op_token {
            Some(Token {
                kind: Tok::Op(op),
                pos,
            }) => (Some(op), pos),
            Some(Token {
                kind: Tok::Has,
                pos,
            }) => (None, pos),
            other => {
                let (pos, found) = match other {
                    Some(t) => (t.pos, t.kind.describe()),
                    None => (self.end, "the end of the filter".to_string()),
                };
                return Err(FilterError::new(
                    pos,
                    format!(
                        "expected an operator after {name}, found {found}; {}",
                        operators_hint(&field)
                    ),
                ));
            }
        };

        let Some(op) = op else {
            return self.parse_presence(field, op_pos);
        };
        if field.is_text() && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(FilterError::new(
                op_pos,
                format!(
                    "operator `{}` is not supported for {}; {}",
                    op.as_str(),
                    field.name(),
                    operators_hint(&field)
                ),
            ));
        }
        let value = self.parse_value(&field, op)?;
        Ok(Filter::Compare { field, op, value })
    }

    /// `labels.<key>:*`, the only supported use of the has operator.
    fn parse_presence(&mut self, field: FilterField, op_pos: usize) -> Result<Filter, FilterError> {
        let FilterField::Label(key) = field else {
            return Err(FilterError::new(
                op_pos,
                format!(
                    "operator `:` is not supported for {}; it is only supported as `labels.<key>:*`",
                    field.name()
                ),
            ));
        };
        match self.bump() {
            Some(Token {
                kind: Tok::Word(w), ..
            }) if w == "*" => Ok(Filter::LabelPresent(key)),
            other => {
                let (pos, found) = match other {
                    Some(t) => (t.pos, t.kind.describe()),
                    None => (self.end, "the end of the filter".to_string()),
                };
                Err(FilterError::new(
                    pos,
                    format!(
                        "expected `*` after `labels.{key}:` (presence test), found {found}; \
                         use `labels.{key} = \"value\"` to compare the value"
                    ),
                ))
            }
        }
    }

    fn parse_value(
        &mut self,
        field: &FilterField,
        op: CompareOp,
    ) -> Result<FilterValue, FilterError> {
        let name = field.name();
        let Some(token) = self.bump() else {
            return Err(FilterError::new(
                self.end,
                format!("expected a value after `{name} {}`", op.as_str()),
            ));
        };
        match (field, &token.kind) {
            (FilterField::Amount, Tok::Word(text)) => parse_decimal_amount(text)
                .map(|(units, nanos)| FilterValue::Amount { units, nanos })
                .map_err(|e| FilterError::new(token.pos, format!("invalid amount: {e}"))),
            (FilterField::Amount, Tok::Minus) => Err(FilterError::new(
                token.pos,
                "invalid amount: amounts are never negative",
            )),
            (FilterField::Amount, Tok::Str(_)) => Err(FilterError::new(
                token.pos,
                "invalid amount: write an unquoted decimal number, e.g. `amount >= 10000`",
            )),
            (FilterField::CreateTime, Tok::Str(text)) => DateTime::parse_from_rfc3339(text)
                .map(|t| FilterValue::Time(t.with_timezone(&Utc)))
                .map_err(|e| {
                    FilterError::new(
                        token.pos,
                        format!(
                            "invalid create_time: {} is not an RFC 3339 timestamp such as \
                             \"2024-01-31T09:00:00Z\" ({e})",
                            truncate_for_message(text)
                        ),
                    )
                }),
            (FilterField::CreateTime, Tok::Word(_)) => Err(FilterError::new(
                token.pos,
                "invalid create_time: quote the timestamp, e.g. \
                 `create_time >= \"2024-01-31T09:00:00Z\"`",
            )),
            (_, Tok::Str(text)) if field.is_text() => Ok(FilterValue::Text(text.clone())),
            (_, Tok::Word(_)) if field.is_text() => Err(FilterError::new(
                token.pos,
                format!("invalid value for {name}: quote the string, e.g. `{name} = \"value\"`"),
            )),
            (_, other) => Err(FilterError::new(
                token.pos,
                format!(
                    "expected a value after `{name} {}`, found {}",
                    op.as_str(),
                    other.describe()
                ),
            )),
        }
    }
}

fn collapse(mut items: Vec<Filter>, combine: fn(Vec<Filter>) -> Filter) -> Filter {
    if items.len() == 1
        && let Some(only) = items.pop()
    {
        return only;
    }
    combine(items)
}

fn operators_hint(field: &FilterField) -> String {
    match field {
        FilterField::Label(key) => {
            format!("labels.{key} supports `=`, `!=` and `:*` (presence)")
        }
        _ if field.is_text() => format!("{} supports `=` and `!=`", field.name()),
        _ => format!(
            "{} supports `=`, `!=`, `<`, `<=`, `>` and `>=`",
            field.name()
        ),
    }
}

fn resolve_field(name: &str, pos: usize) -> Result<FilterField, FilterError> {
    let field = match name {
        "stage" => FilterField::Stage,
        "owner" => FilterField::Owner,
        "pipeline_id" => FilterField::PipelineId,
        "source" => FilterField::Source,
        "amount" => FilterField::Amount,
        "create_time" => FilterField::CreateTime,
        "labels" => {
            return Err(FilterError::new(
                pos,
                "labels needs a key, e.g. `labels.region = \"emea\"`",
            ));
        }
        _ if ["AND", "OR", "NOT"]
            .iter()
            .any(|k| name.eq_ignore_ascii_case(k)) =>
        {
            // Lower-case keywords would otherwise read as an unknown field, which misleads.
            return Err(FilterError::new(
                pos,
                format!(
                    "keywords are upper case: write {} instead of {name}",
                    name.to_ascii_uppercase()
                ),
            ));
        }
        _ => match name.strip_prefix("labels.") {
            Some(key) => {
                let key_pos = pos + "labels.".len();
                validate_label_key(key).map_err(|e| FilterError::new(key_pos, e))?;
                FilterField::Label(key.to_string())
            }
            None => {
                return Err(FilterError::new(
                    pos,
                    format!(
                        "unknown field {}; supported fields are {SUPPORTED_FIELDS}",
                        truncate_for_message(name)
                    ),
                ));
            }
        },
    };
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(input: &str) -> Filter {
        parse_filter(input)
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .expect("non-blank filter")
    }

    fn err(input: &str) -> FilterError {
        match parse_filter(input) {
            Err(e) => e,
            Ok(f) => panic!("{input:?} parsed as {f:?}"),
        }
    }

    fn text(field: FilterField, op: CompareOp, value: &str) -> Filter {
        Filter::Compare {
            field,
            op,
            value: FilterValue::Text(value.into()),
        }
    }

    fn stage(value: &str) -> Filter {
        text(FilterField::Stage, CompareOp::Eq, value)
    }

    #[test]
    fn blank_filters_match_everything() {
        assert_eq!(parse_filter(""), Ok(None));
        assert_eq!(parse_filter("  \t\n "), Ok(None));
    }

    #[test]
    fn parses_each_field() {
        assert_eq!(parse(r#"stage = "proposal""#), stage("proposal"));
        assert_eq!(
            parse(r#"owner != "ann@example.com""#),
            text(FilterField::Owner, CompareOp::Ne, "ann@example.com")
        );
        assert_eq!(
            parse(r#"pipeline_id="p1""#),
            text(FilterField::PipelineId, CompareOp::Eq, "p1")
        );
        assert_eq!(
            parse(r#"source = "web""#),
            text(FilterField::Source, CompareOp::Eq, "web")
        );
        assert_eq!(
            parse(r#"labels.region = "emea""#),
            text(FilterField::Label("region".into()), CompareOp::Eq, "emea")
        );
        assert_eq!(
            parse("labels.vip-tier_2:*"),
            Filter::LabelPresent("vip-tier_2".into())
        );
        assert_eq!(
            parse("amount >= 99.95"),
            Filter::Compare {
                field: FilterField::Amount,
                op: CompareOp::Ge,
                value: FilterValue::Amount {
                    units: 99,
                    nanos: 950_000_000
                }
            }
        );
        let expected_time = DateTime::parse_from_rfc3339("2024-01-31T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse(r#"create_time < "2024-01-31T09:00:00+01:00""#),
            Filter::Compare {
                field: FilterField::CreateTime,
                op: CompareOp::Lt,
                value: FilterValue::Time(expected_time)
            }
        );
    }

    #[test]
    fn parses_every_comparison_operator() {
        for (text, op) in [
            ("=", CompareOp::Eq),
            ("!=", CompareOp::Ne),
            ("<", CompareOp::Lt),
            ("<=", CompareOp::Le),
            (">", CompareOp::Gt),
            (">=", CompareOp::Ge),
        ] {
            assert_eq!(
                parse(&format!("amount{text}5")),
                Filter::Compare {
                    field: FilterField::Amount,
                    op,
                    value: FilterValue::Amount { units: 5, nanos: 0 }
                }
            );
        }
    }

    #[test]
    fn string_escapes() {
        assert_eq!(parse(r#"stage = "a\"b\\c""#), stage(r#"a"b\c"#));
        assert_eq!(parse(r#"stage = """#), stage(""));
        assert_eq!(parse(r#"stage = "(AND) OR""#), stage("(AND) OR"));
        assert_eq!(parse("stage = \"é ü\""), stage("é ü"));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let (a, b, c) = (stage("a"), stage("b"), stage("c"));
        assert_eq!(
            parse(r#"stage = "a" OR stage = "b" AND stage = "c""#),
            Filter::Or(vec![a.clone(), Filter::And(vec![b.clone(), c.clone()])])
        );
        assert_eq!(
            parse(r#"stage = "a" AND stage = "b" OR stage = "c""#),
            Filter::Or(vec![Filter::And(vec![a.clone(), b.clone()]), c.clone()])
        );
        assert_eq!(
            parse(r#"(stage = "a" OR stage = "b") AND stage = "c""#),
            Filter::And(vec![Filter::Or(vec![a.clone(), b.clone()]), c.clone()])
        );
        assert_eq!(
            parse(r#"stage = "a" AND stage = "b" AND stage = "c""#),
            Filter::And(vec![a, b, c])
        );
    }

    #[test]
    fn adjacent_terms_are_an_implicit_and() {
        assert_eq!(
            parse(r#"stage = "a" stage = "b" OR stage = "c""#),
            Filter::Or(vec![Filter::And(vec![stage("a"), stage("b")]), stage("c")])
        );
    }

    #[test]
    fn negation() {
        let not = |f: Filter| Filter::Not(Box::new(f));
        assert_eq!(parse(r#"NOT stage = "a""#), not(stage("a")));
        assert_eq!(parse(r#"-stage = "a""#), not(stage("a")));
        assert_eq!(
            parse("-labels.vip:*"),
            not(Filter::LabelPresent("vip".into()))
        );
        assert_eq!(parse(r#"NOT NOT stage = "a""#), not(not(stage("a"))));
        assert_eq!(
            parse(r#"NOT stage = "a" AND stage = "b""#),
            Filter::And(vec![not(stage("a")), stage("b")])
        );
        assert_eq!(
            parse(r#"NOT (stage = "a" OR stage = "b")"#),
            not(Filter::Or(vec![stage("a"), stage("b")]))
        );
        assert_eq!(
            parse(r#"stage = "a" -stage = "b""#),
            Filter::And(vec![stage("a"), not(stage("b"))])
        );
    }

    #[test]
    fn spec_example_parses() {
        let f = parse(r#"stage = "proposal" AND amount >= 10000 AND labels.region = "emea""#);
        let Filter::And(items) = f else {
            panic!("expected AND")
        };
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn unknown_field_lists_supported_fields() {
        let e = err(r#"stage = "a" AND colour = "red""#);
        assert_eq!(e.position, 16);
        assert!(e.message.contains("unknown field \"colour\""), "{e}");
        assert!(e.message.contains(SUPPORTED_FIELDS), "{e}");
        assert_eq!(err(r#"labels = "x""#).position, 0);
    }

    #[test]
    fn bad_label_keys() {
        for key in ["Region", "1x", "", "a.b", &"a".repeat(64)] {
            let e = err(&format!("labels.{key} = \"x\""));
            assert_eq!(e.position, 7, "{key}: {e}");
            assert!(e.message.contains("label key"), "{e}");
        }
        assert!(parse_filter(&format!("labels.{} = \"x\"", "a".repeat(63))).is_ok());
    }

    #[test]
    fn wrong_operator_for_field() {
        let e = err(r#"stage < "a""#);
        assert_eq!(e.position, 6);
        assert!(e.message.contains("`<` is not supported for stage"), "{e}");
        assert_eq!(err(r#"labels.x >= "a""#).position, 9);
        let e = err("amount:*");
        assert_eq!(e.position, 6);
        assert!(e.message.contains("labels.<key>:*"), "{e}");
        let e = err(r#"labels.x:"a""#);
        assert_eq!(e.position, 9);
        assert!(e.message.contains("expected `*`"), "{e}");
        assert_eq!(err("labels.x:").position, 9);
    }

    #[test]
    fn missing_operator_or_value() {
        let e = err("stage");
        assert_eq!(e.position, 5);
        assert!(e.message.contains("expected an operator"), "{e}");
        assert_eq!(err(r#"stage "a""#).position, 6);
        let e = err("amount >= ");
        assert_eq!(e.position, 10);
        assert!(e.message.contains("expected a value"), "{e}");
        assert_eq!(err("amount = (").position, 9);
    }

    #[test]
    fn bad_literals() {
        let e = err("amount > 1e3");
        assert_eq!(e.position, 9);
        assert!(e.message.starts_with("invalid amount"), "{e}");
        assert_eq!(err("amount > -5").position, 9);
        assert_eq!(err(r#"amount > "5""#).position, 9);
        assert_eq!(err("amount > 1.0000000001").position, 9);
        let e = err(r#"create_time > "yesterday""#);
        assert_eq!(e.position, 14);
        assert!(e.message.contains("RFC 3339"), "{e}");
        assert_eq!(err("create_time > 2024-01-01").position, 14);
        let e = err("stage = proposal");
        assert_eq!(e.position, 8);
        assert!(e.message.contains("quote the string"), "{e}");
    }

    #[test]
    fn bad_strings() {
        let e = err(r#"stage = "abc"#);
        assert_eq!(e.position, 8);
        assert!(e.message.contains("unterminated string"), "{e}");
        assert_eq!(err(r#"stage = "abc\"#).position, 8);
        let e = err(r#"stage = "a\nb""#);
        assert_eq!(e.position, 10);
        assert!(e.message.contains("unsupported escape"), "{e}");
        assert_eq!(err(r#"stage ! "a""#).position, 6);
    }

    #[test]
    fn unbalanced_parentheses() {
        let e = err(r#"(stage = "a" OR (stage = "b")"#);
        assert_eq!(e.position, 0);
        assert!(e.message.contains("never closed"), "{e}");
        let e = err(r#"stage = "a")"#);
        assert_eq!(e.position, 11);
        assert!(e.message.contains("no matching `(`"), "{e}");
        assert_eq!(err(")").position, 0);
        assert_eq!(err("()").position, 1);
        let e = err(r#"(stage = "a" "b")"#);
        assert_eq!(e.position, 13);
        assert!(e.message.contains("expected `)`"), "{e}");
    }

    #[test]
    fn trailing_input_and_dangling_keywords() {
        let e = err(r#"stage = "a" "b""#);
        assert_eq!(e.position, 12);
        assert!(e.message.contains("expected AND, OR or the end"), "{e}");
        assert_eq!(err(r#"stage = "a" = "b""#).position, 12);
        assert_eq!(err(r#"stage = "a" AND"#).position, 15);
        assert_eq!(err(r#"stage = "a" OR"#).position, 14);
        assert_eq!(err("NOT").position, 3);
        assert_eq!(err(r#"AND stage = "a""#).position, 0);
        assert_eq!(err(r#"stage = "a" AND OR stage = "b""#).position, 16);
    }

    #[test]
    fn lower_case_keywords_are_explained() {
        let e = err(r#"stage = "a" and owner = "b""#);
        assert_eq!(e.position, 12);
        assert!(e.message.contains("write AND instead of and"), "{e}");
        assert_eq!(err(r#"not stage = "a""#).position, 0);
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(err(r#"stage = "ééé" bogus = "x""#).position, 14);
    }

    #[test]
    fn length_limit() {
        let long = format!("stage = \"{}\"", "a".repeat(MAX_FILTER_CHARS));
        let e = err(&long);
        assert_eq!(e.position, MAX_FILTER_CHARS);
        assert!(e.message.contains("longer than 2000"), "{e}");
        let exact = format!("stage = \"{}\"", "a".repeat(MAX_FILTER_CHARS - 10));
        assert_eq!(exact.chars().count(), MAX_FILTER_CHARS);
        assert!(parse_filter(&exact).is_ok());
    }

    #[test]
    fn nesting_limit() {
        let nested = |n: usize| format!("{}stage = \"a\"{}", "(".repeat(n), ")".repeat(n));
        assert!(parse_filter(&nested(MAX_NESTING)).is_ok());
        let e = err(&nested(MAX_NESTING + 1));
        assert_eq!(e.position, MAX_NESTING);
        assert!(e.message.contains("nested deeper than 32"), "{e}");
        let e = err(&format!("{}stage = \"a\"", "NOT ".repeat(MAX_NESTING + 1)));
        assert_eq!(e.position, 4 * MAX_NESTING);
        assert!(
            err(&format!("{}labels.a:*", "-".repeat(1000)))
                .message
                .contains("nested")
        );
        // Far more parentheses than the limit must fail cleanly, not overflow the stack.
        assert!(
            err(&"(".repeat(MAX_FILTER_CHARS))
                .message
                .contains("nested")
        );
    }

    #[test]
    fn term_limit() {
        let terms = |n: usize| vec!["labels.a:*"; n].join(" OR ");
        assert!(parse_filter(&terms(MAX_TERMS)).is_ok());
        let e = err(&terms(MAX_TERMS + 1));
        assert_eq!(e.position, MAX_TERMS * "labels.a:* OR ".len());
        assert!(e.message.contains("more than 64 terms"), "{e}");
    }

    #[test]
    fn error_display_includes_position() {
        let e = err("bogus = \"x\"");
        assert!(
            e.to_string().starts_with("at position 0: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        let f = parse(
            r#"-stage="a\"b"  amount>=10.50 OR (labels.x:* AND create_time < "2024-01-31T09:00:00+01:00")"#,
        );
        let text = f.to_string();
        assert_eq!(
            text,
            r#"(NOT stage = "a\"b" AND amount >= 10.5) OR (labels.x:* AND create_time < "2024-01-31T08:00:00Z")"#
        );
        assert_eq!(parse(&text), f);
    }

    #[test]
    fn fingerprint_ignores_layout_only() {
        let a = fingerprint(r#"stage = "a" AND amount >= 10"#);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, fingerprint(r#"  stage="a"   AND amount>=10.0 "#));
        assert_ne!(a, fingerprint(r#"stage = "b" AND amount >= 10"#));
        assert_eq!(fingerprint(""), fingerprint("   "));
        assert_ne!(fingerprint(""), fingerprint("bogus"));
    }

    fn filterish_token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("(".to_string()),
            Just(")".to_string()),
            Just("-".to_string()),
            Just("AND".to_string()),
            Just("OR".to_string()),
            Just("NOT".to_string()),
            Just("and".to_string()),
            Just(":".to_string()),
            Just("*".to_string()),
            Just("!".to_string()),
            prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]).prop_map(String::from),
            prop::sample::select(vec![
                "stage",
                "owner",
                "pipeline_id",
                "source",
                "amount",
                "create_time",
                "labels",
                "labels.region",
                "labels.Bad",
                "labels.",
                "colour",
            ])
            .prop_map(String::from),
            "[0-9]{1,12}(\\.[0-9]{0,10})?",
            "\"[a-z\\\\\"]{0,6}\"?",
            Just("\"2024-01-31T09:00:00Z\"".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(input in "\\PC{0,300}") {
            let _ = parse_filter(&input);
            let _ = fingerprint(&input);
        }

        #[test]
        fn never_panics_on_token_soup(
            tokens in prop::collection::vec(filterish_token(), 0..60),
            glue in prop::sample::select(vec!["", " "]),
        ) {
            let input = tokens.join(glue);
            match parse_filter(&input) {
                Ok(Some(filter)) => {
                    // Whatever parses must re-parse from its canonical text to the same tree.
                    let reparsed = parse_filter(&filter.to_string());
                    prop_assert_eq!(reparsed, Ok(Some(filter)));
                }
                Ok(None) => {}
                Err(e) => prop_assert!(e.position <= input.chars().count()),
            }
        }

        #[test]
        fn never_panics_on_deep_nesting(n in 0usize..3000, open in "[(\\-]") {
            let input = format!("{}labels.a:*", open.repeat(n));
            let _ = parse_filter(&input);
        }
    }
}
