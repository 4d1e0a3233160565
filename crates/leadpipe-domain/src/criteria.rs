//! Entry criteria: CEL expressions over a lead, compiled once when a pipeline is saved and
//! evaluated on every move.
//!
//! The `lead` variable is the map documented on `Criterion.expression` in
//! `proto/leadpipe/v1/pipeline.proto`; [`lead_value`] is the single place that shapes it and
//! [`LeadShape`] the schema compile-time checks hold expressions to. Keep the three in step.

pub mod cost;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::{Context, Env, ExecutionError, ParseErrors, Program, ResolveResult, Value};
use chrono::{DateTime, Utc};

use super::ids::{LeadId, PipelineId, StageKey};
use super::lead::{Bant, Lead, LeadFields};
use super::money::Money;
use cost::{Cost, MAX_CRITERION_COST};

/// Longest expression accepted, in bytes: criteria are one-liners, and the parser's cost grows
/// with the input.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// Shared by every program and evaluation: `Env::stdlib()` registers the whole standard library,
/// which `Context::default()` would redo on every evaluation.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Why an expression was refused, with a 1-based position in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub message: String,
    pub line: usize,
    pub column: usize,
    /// Set when the expression is refused for its estimated cost, which has no position.
    pub estimated_cost: Option<Cost>,
}

impl CompileError {
    fn at_start(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line: 1,
            column: 1,
            estimated_cost: None,
        }
    }

    fn too_costly(estimated_cost: Cost) -> Self {
        Self {
            message: format!(
                "its estimated cost is {estimated_cost}, above the limit of \
                 {MAX_CRITERION_COST} per criterion; simplify it: fewer or shorter lists, fewer \
                 nested comprehensions, literal and simpler regular expressions"
            ),
            estimated_cost: Some(estimated_cost),
            ..Self::at_start("")
        }
    }

    fn from_parse(errors: &ParseErrors) -> Self {
        let Some(first) = errors.errors.first() else {
            return Self::at_start("the expression does not parse");
        };
        // The parser reports 1-based lines and columns, or (0, 0) when it has no position.
        let clamp = |n: isize| usize::try_from(n).unwrap_or(1).max(1);
        let mut message = first.msg.clone();
        if errors.errors.len() > 1 {
            message.push_str(&format!(" (and {} more errors)", errors.errors.len() - 1));
        }
        Self {
            message,
            line: clamp(first.pos.0),
            column: clamp(first.pos.1),
            estimated_cost: None,
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.estimated_cost.is_some() {
            return f.write_str(&self.message);
        }
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for CompileError {}

/// A criterion expression, parsed and checked. Cheap to evaluate, and shareable across tasks.
#[derive(Debug)]
pub struct CompiledExpression {
    source: String,
    program: Program,
    cost: Cost,
}

impl CompiledExpression {
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The static upper bound of one evaluation, see [`cost`].
    pub fn cost(&self) -> Cost {
        self.cost
    }

    fn position_of(&self, id: u64) -> (usize, usize) {
        let offset = self
            .program
            .source_info()
            .offset_for(id)
            .map_or(0, |(start, _)| start as usize);
        line_and_column(&self.source, offset)
    }
}

/// How much checking a compilation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An expression being saved: refused above [`MAX_CRITERION_COST`], then dry-run.
    New,
    /// An expression read back from storage: it passed the checks of its day, and is only
    /// parsed and estimated, never run here, whatever its cost. The caller decides what to do
    /// with one above today's limits.
    Stored,
}

/// Parses `expression` and refuses it unless it is a plausible criterion whose cost is within
/// [`MAX_CRITERION_COST`]; see [`dry_run`].
pub fn compile(expression: &str) -> Result<CompiledExpression, CompileError> {
    compile_in(expression, Mode::New)
}

/// Parses a stored expression and estimates its cost without evaluating it; see [`Mode::Stored`].
pub fn compile_stored(expression: &str) -> Result<CompiledExpression, CompileError> {
    compile_in(expression, Mode::Stored)
}

fn compile_in(expression: &str, mode: Mode) -> Result<CompiledExpression, CompileError> {
    if expression.trim().is_empty() {
        return Err(CompileError::at_start("the expression is empty"));
    }
    if expression.len() > MAX_EXPRESSION_LEN {
        return Err(CompileError::at_start(format!(
            "the expression must be at most {MAX_EXPRESSION_LEN} bytes, got {}",
            expression.len()
        )));
    }
    if let Some(offset) = too_deeply_nested(expression) {
        let (line, column) = line_and_column(expression, offset);
        return Err(CompileError {
            message: format!("brackets are nested more than {MAX_NESTING} deep"),
            line,
            column,
            estimated_cost: None,
        });
    }
    if let Some(offset) = long_unary_chain(expression) {
        let (line, column) = line_and_column(expression, offset);
        return Err(CompileError {
            message: format!(
                "`!` or `-` is repeated more than {MAX_DEPTH} times in a row; each counts as a \
                 level of the expression tree"
            ),
            line,
            column,
            estimated_cost: None,
        });
    }
    // The CEL parser recurses deeply, with large frames per bracket in a debug build, so a
    // hostile expression needs more stack than a Tokio worker's 2 MiB: compile on a thread of its
    // own with room to spare. A panic in the parser becomes an error, not a crash.
    std::thread::scope(|scope| {
        let compiling = std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn_scoped(scope, || compile_here(expression, mode));
        match compiling {
            Ok(compiling) => compiling.join().unwrap_or_else(|_| {
                Err(CompileError::at_start("the expression could not be parsed"))
            }),
            Err(_) => Err(CompileError::at_start(
                "the server cannot compile expressions right now; retry",
            )),
        }
    })
}

/// Deepest bracket nesting accepted. Criteria are one-liners; this only stops inputs built to
/// exhaust the parser.
pub const MAX_NESTING: usize = 32;
/// Deepest expression tree accepted, so that evaluating it on any thread is safe.
pub const MAX_DEPTH: usize = 32;
/// Stack of the thread that parses and checks an expression (reserved, not committed, memory).
const COMPILE_STACK: usize = 256 * 1024 * 1024;

/// The characters of `expression` outside string literals, with their byte offsets; a
/// literal's opening quote stands for the whole literal.
fn outside_strings(expression: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    expression.char_indices().filter(move |&(_, c)| {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            return false;
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
        }
        true
    })
}

/// The byte offset of the first bracket nested deeper than [`MAX_NESTING`], outside string
/// literals.
fn too_deeply_nested(expression: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (offset, c) in outside_strings(expression) {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(offset);
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The byte offset of the first `!` or `-` that makes a run of them (outside string literals,
/// spaces between them allowed) longer than [`MAX_DEPTH`]. The parser folds such a run into at
/// most one operator, so the tree-depth check never sees it, but it still recurses once per
/// operator, and the documented limit counts each one as a level.
fn long_unary_chain(expression: &str) -> Option<usize> {
    let mut run = 0usize;
    let mut chars = outside_strings(expression).peekable();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' | '\'' => run = 0,
            '!' if chars.peek().is_some_and(|&(_, next)| next == '=') => run = 0,
            '!' | '-' => {
                run += 1;
                if run > MAX_DEPTH {
                    return Some(offset);
                }
            }
            _ if c.is_whitespace() => {}
            _ => run = 0,
        }
    }
    None
}

fn depth(node: &IdedExpr) -> usize {
    1 + children(&node.expr)
        .into_iter()
        .map(depth)
        .max()
        .unwrap_or(0)
}

fn compile_here(expression: &str, mode: Mode) -> Result<CompiledExpression, CompileError> {
    let program = ENV
        .compile(expression)
        .map_err(|e| CompileError::from_parse(&e))?;
    let mut compiled = CompiledExpression {
        source: expression.to_owned(),
        program,
        cost: Cost::MAX,
    };
    if depth(compiled.program.expression()) > MAX_DEPTH {
        return Err(CompileError::at_start(format!(
            "the expression is nested more than {MAX_DEPTH} levels deep; simplify it"
        )));
    }
    if let Err((id, message)) = check_lead_fields(compiled.program.expression(), true) {
        let (line, column) = compiled.position_of(id);
        return Err(CompileError {
            message,
            line,
            column,
            estimated_cost: None,
        });
    }
    // Before the dry run, which would otherwise pay the very cost being refused.
    compiled.cost = cost::estimate(compiled.program.expression());
    if mode == Mode::Stored {
        return Ok(compiled);
    }
    if compiled.cost > MAX_CRITERION_COST {
        return Err(CompileError::too_costly(compiled.cost));
    }
    dry_run(&compiled)?;
    Ok(compiled)
}

/// Evaluates one expression; for several against the same lead, use [`Activation`].
pub fn evaluate(expr: &CompiledExpression, lead: &Lead) -> Result<bool, String> {
    Activation::new(lead).evaluate(expr)
}

/// Evaluates every expression against `lead`, building the `lead` variable once.
pub fn evaluate_all<'a>(
    exprs: impl IntoIterator<Item = &'a CompiledExpression>,
    lead: &Lead,
) -> Vec<Result<bool, String>> {
    let activation = Activation::new(lead);
    exprs.into_iter().map(|e| activation.evaluate(e)).collect()
}

/// A lead bound as the `lead` variable, ready to evaluate any number of expressions: building
/// the variable is the costly part of an evaluation, so a move builds it once per target stage.
pub struct Activation {
    context: Context<'static, 'static>,
}

impl Activation {
    pub fn new(lead: &Lead) -> Self {
        Self::from_value(lead_value(lead))
    }

    fn from_value(lead: Value) -> Self {
        let mut context = Context::with_env(Arc::clone(&ENV));
        context.add_variable_from_value("lead", lead);
        Self { context }
    }

    /// A runtime error or a non-bool result is an `Err` describing it.
    pub fn evaluate(&self, expr: &CompiledExpression) -> Result<bool, String> {
        as_bool(self.execute(expr))
    }

    fn execute(&self, expr: &CompiledExpression) -> ResolveResult {
        expr.program.execute(&self.context)
    }
}

fn as_bool(result: ResolveResult) -> Result<bool, String> {
    match result {
        Ok(Value::Bool(value)) => Ok(value),
        Ok(other) => Err(format!(
            "the expression evaluated to a {} instead of a bool",
            other.type_of()
        )),
        Err(error) => Err(error.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// The `lead` variable

/// Builds `lead` exactly as pipeline.proto documents it. Unset money is zero in no currency and
/// unset timestamps are null, so that `lead.amount.value > 0.0` needs no presence check.
fn lead_value(lead: &Lead) -> Value {
    let f = &lead.fields;
    let mut map: HashMap<&'static str, Value> = HashMap::with_capacity(18);
    map.insert("title", text(&f.title));
    map.insert("company", text(&f.company));
    map.insert("contact_name", text(&f.contact_name));
    map.insert("contact_email", text(&f.contact_email));
    map.insert("owner", text(&f.owner));
    map.insert("source", text(&f.source));
    map.insert("pipeline_id", text(lead.pipeline_id.as_str()));
    map.insert("stage", text(lead.stage.as_str()));
    map.insert("lost_reason", text(&f.lost_reason));
    map.insert("amount", money(f.amount.as_ref()));
    map.insert("bant", bant(&f.bant));
    map.insert("expected_close_time", timestamp(f.expected_close_time));
    map.insert("has_bant_timeline", Value::Bool(f.bant.timeline.is_some()));
    map.insert(
        "has_expected_close_time",
        Value::Bool(f.expected_close_time.is_some()),
    );
    let labels: HashMap<String, Value> =
        f.labels.iter().map(|(k, v)| (k.clone(), text(v))).collect();
    map.insert("labels", Value::from(labels));
    Value::from(map)
}

/// Trimmed, so that a criterion like `lead.need != ""` is not met by whitespace.
fn text(value: &str) -> Value {
    Value::from(value.trim())
}

fn money(value: Option<&Money>) -> Value {
    let (currency, amount) = value.map_or(("", 0.0), |m| (m.currency.as_str(), m.value()));
    Value::from(HashMap::from([
        ("currency_code", Value::from(currency)),
        ("value", Value::Float(amount)),
    ]))
}

fn bant(bant: &Bant) -> Value {
    Value::from(HashMap::from([
        ("budget", money(bant.budget.as_ref())),
        ("authority", text(&bant.authority)),
        ("need", text(&bant.need)),
        ("timeline", timestamp(bant.timeline)),
    ]))
}

fn timestamp(value: Option<DateTime<Utc>>) -> Value {
    value.map_or(Value::Null, |t| Value::Timestamp(t.fixed_offset()))
}

/// The documented schema of `lead`, for refusing misspelled fields at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeadShape {
    Lead,
    Money,
    Bant,
    /// Any key may be asked for: a lead simply may not have it.
    Labels,
    /// A string, double, bool or timestamp: nothing to select.
    Scalar,
}

/// The fields of `lead`, of its money values and of its BANT, as [`lead_value`] builds them; the
/// compile-time checks and the cost estimate both read these.
pub(crate) const LEAD_FIELDS: &[&str] = &[
    "title",
    "company",
    "contact_name",
    "contact_email",
    "owner",
    "source",
    "pipeline_id",
    "stage",
    "lost_reason",
    "amount",
    "bant",
    "expected_close_time",
    "has_bant_timeline",
    "has_expected_close_time",
    "labels",
];
pub(crate) const MONEY_FIELDS: &[&str] = &["currency_code", "value"];
pub(crate) const BANT_FIELDS: &[&str] = &["budget", "authority", "need", "timeline"];

impl LeadShape {
    fn fields(self) -> &'static [&'static str] {
        match self {
            LeadShape::Lead => LEAD_FIELDS,
            LeadShape::Money => MONEY_FIELDS,
            LeadShape::Bant => BANT_FIELDS,
            LeadShape::Labels | LeadShape::Scalar => &[],
        }
    }

    fn field(self, name: &str) -> Option<LeadShape> {
        match (self, name) {
            (LeadShape::Lead, "amount") | (LeadShape::Bant, "budget") => Some(LeadShape::Money),
            (LeadShape::Lead, "bant") => Some(LeadShape::Bant),
            (LeadShape::Lead, "labels") => Some(LeadShape::Labels),
            (LeadShape::Labels, _) => Some(LeadShape::Scalar),
            _ if self.fields().contains(&name) => Some(LeadShape::Scalar),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compile-time checks
//
// CEL is evaluated dynamically here, so a misspelled field (`lead.amout.value > 0.0`) or a
// mistyped comparison parses fine and would only fail on every move, reading as "criterion not
// met" with no hint why. Two checks catch that when the pipeline is saved instead:
// - `check_lead_fields` holds every `lead.a.b` / `lead["a"]` path to the documented schema, also
//   in branches no sample lead would reach;
// - `dry_run` evaluates the expression against sample leads.

/// Finds the first `lead` path naming a field the schema lacks, as (node id, message).
/// `lead_visible` is false inside a comprehension that rebinds the name `lead`.
fn check_lead_fields(node: &IdedExpr, lead_visible: bool) -> Result<(), (u64, String)> {
    if lead_visible && let Some(path) = lead_path(node) {
        return check_path(&path);
    }
    if let Expr::Comprehension(c) = &node.expr {
        let rebinds = [Some(&c.iter_var), c.iter_var2.as_ref(), Some(&c.accu_var)]
            .into_iter()
            .flatten()
            .any(|name| name == "lead");
        check_lead_fields(&c.iter_range, lead_visible)?;
        check_lead_fields(&c.accu_init, lead_visible)?;
        for scoped in [&c.loop_cond, &c.loop_step, &c.result] {
            check_lead_fields(scoped, lead_visible && !rebinds)?;
        }
        return Ok(());
    }
    children(&node.expr)
        .into_iter()
        .try_for_each(|child| check_lead_fields(child, lead_visible))
}

/// The fields `node` selects from `lead`, outermost last, each with the id of the node naming
/// it; `None` if `node` is not such a chain of selections and constant-key indexing.
fn lead_path(node: &IdedExpr) -> Option<Vec<(&str, u64)>> {
    let mut path = Vec::new();
    let mut current = node;
    loop {
        match &current.expr {
            Expr::Ident(name) if name == "lead" => {
                path.reverse();
                return Some(path);
            }
            Expr::Select(select) => {
                path.push((select.field.as_str(), current.id));
                current = &select.operand;
            }
            Expr::Call(call)
                if call.func_name == operators::INDEX
                    && call.target.is_none()
                    && call.args.len() == 2 =>
            {
                let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
                    return None;
                };
                path.push((key.inner(), call.args[1].id));
                current = &call.args[0];
            }
            _ => return None,
        }
    }
}

fn check_path(path: &[(&str, u64)]) -> Result<(), (u64, String)> {
    let mut shape = LeadShape::Lead;
    let mut prefix = String::from("lead");
    for &(field, id) in path {
        let Some(next) = shape.field(field) else {
            let message = if shape == LeadShape::Scalar {
                format!("{prefix} has no fields, so it has no field \"{field}\"")
            } else {
                format!(
                    "{prefix} has no field \"{field}\" (its fields are: {})",
                    shape.fields().join(", ")
                )
            };
            return Err((id, message));
        };
        prefix.push('.');
        prefix.push_str(field);
        shape = next;
    }
    Ok(())
}

fn children(expr: &Expr) -> Vec<&IdedExpr> {
    match expr {
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(call.args.iter())
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => entries(&map.entries),
        Expr::Struct(st) => entries(&st.entries),
        Expr::Select(select) => vec![&select.operand],
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => Vec::new(),
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&IdedExpr> {
    entries
        .iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
            EntryExpr::StructField(e) => vec![&e.value],
        })
        .collect()
}

/// The id of the first node, depth first, that `matches`.
fn find_node(node: &IdedExpr, matches: &dyn Fn(&Expr) -> bool) -> Option<u64> {
    if matches(&node.expr) {
        return Some(node.id);
    }
    children(&node.expr)
        .into_iter()
        .find_map(|child| find_node(child, matches))
}

/// Evaluates the expression against two sample leads and refuses it if that shows it can never
/// work as a criterion:
/// - an empty lead (nothing set, timestamps null), as a brand-new lead looks;
/// - a filled lead (every field set, timestamps present).
///
/// Refused on either: an undeclared variable or function, and a result that is not a bool.
/// Refused on the filled lead only: type errors such as a missing operator overload, because on
/// the empty lead a null timestamp legitimately fails a comparison, which at run time just means
/// "not met". Accepted: a missing key, which after `check_lead_fields` can only be a label the
/// sample lacks, and value errors such as division by zero, which depend on the data.
fn dry_run(expr: &CompiledExpression) -> Result<(), CompileError> {
    let samples = [(sample_lead(false), false), (sample_lead(true), true)];
    for (lead, filled) in samples {
        match Activation::from_value(lead_value(&lead)).execute(expr) {
            Ok(Value::Bool(_)) => {}
            Ok(other) => {
                return Err(CompileError::at_start(format!(
                    "the expression must evaluate to a bool, but it evaluates to a {}",
                    other.type_of()
                )));
            }
            Err(error @ ExecutionError::UndeclaredReference(_)) => {
                return Err(runtime_error(expr, &error));
            }
            Err(error) if filled && is_type_error(&error) => {
                return Err(runtime_error(expr, &error));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

fn is_type_error(error: &ExecutionError) -> bool {
    matches!(
        error,
        ExecutionError::NoSuchOverload(_)
            | ExecutionError::UnexpectedType { .. }
            | ExecutionError::ValuesNotComparable(..)
            | ExecutionError::UnsupportedBinaryOperator(..)
            | ExecutionError::UnsupportedTargetType { .. }
            | ExecutionError::NotSupportedAsMethod { .. }
            | ExecutionError::InvalidArgumentCount { .. }
            | ExecutionError::UnsupportedIndex(..)
            | ExecutionError::UnsupportedKeyType(_)
            | ExecutionError::MissingArgumentOrTarget
    )
}

/// Runtime errors carry no position: point at the node they most likely come from.
fn runtime_error(expr: &CompiledExpression, error: &ExecutionError) -> CompileError {
    let root = expr.program.expression();
    let id = match error {
        ExecutionError::UndeclaredReference(name) => find_node(root, &|e| match e {
            Expr::Ident(ident) => ident == name.as_str(),
            Expr::Call(call) => call.func_name == name.as_str(),
            _ => false,
        }),
        ExecutionError::NoSuchOverload(overload) => find_node(
            root,
            &|e| matches!(e, Expr::Call(call) if call.func_name == overload.function()),
        ),
        _ => None,
    };
    let (line, column) = id.map_or((1, 1), |id| expr.position_of(id));
    CompileError {
        message: error.to_string(),
        line,
        column,
        estimated_cost: None,
    }
}

fn sample_lead(filled: bool) -> Lead {
    let now = Utc::now();
    let word = |s: &str| if filled { s.to_owned() } else { String::new() };
    let money = filled.then(|| Money::parse("EUR", 1000, 0).expect("a valid sample amount"));
    let fields = LeadFields {
        title: word("Sample"),
        company: word("Sample Inc."),
        contact_name: word("Dana"),
        contact_email: word("dana@example.com"),
        owner: word("owner"),
        source: word("web"),
        amount: money.clone(),
        bant: Bant {
            budget: money,
            authority: word("CFO"),
            need: word("Faster invoicing"),
            timeline: filled.then_some(now),
        },
        expected_close_time: filled.then_some(now),
        labels: Default::default(),
        lost_reason: word("Too expensive"),
    };
    Lead {
        id: LeadId::generate(),
        fields,
        pipeline_id: PipelineId::default_pipeline(),
        stage: StageKey::parse("sample").expect("a valid sample stage key"),
        win_probability: 0.0,
        create_time: now,
        update_time: now,
        stage_enter_time: now,
        close_time: None,
        version: 1,
        external_id: None,
        close_date_push_count: 0,
        first_expected_close_time: None,
    }
}

/// 1-based line and column (in characters) of a byte offset into `source`.
fn line_and_column(source: &str, byte_offset: usize) -> (usize, usize) {
    let offset = byte_offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Leads for the tests of this crate and the crates built on it.
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    /// A lead with nothing set, as a brand-new lead looks.
    pub fn lead() -> super::Lead {
        super::sample_lead(false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn lead() -> Lead {
        testing::lead()
    }

    fn eval(expression: &str, lead: &Lead) -> Result<bool, String> {
        evaluate(&compile(expression).expect("compiles"), lead)
    }

    #[test]
    fn hostile_nesting_is_refused_without_crashing() {
        let hostile = [
            "(".repeat(15),
            format!("{}true{}", "(".repeat(100), ")".repeat(100)),
            format!("{}1{} == [[1]]", "[".repeat(40), "]".repeat(40)),
            format!("{}1 > 0", "1 + ".repeat(500)),
            format!("{}lead.title{} > 0", "size(".repeat(60), ")".repeat(60)),
            format!("lead.title == \"{}\" && {}", "(".repeat(40), "(".repeat(40)),
        ];
        for expression in hostile {
            assert!(compile(&expression).is_err(), "{expression}");
        }
        // Brackets inside string literals do not count.
        let quoted = format!("lead.title != \"{}\"", "(".repeat(40));
        assert!(compile(&quoted).is_ok());
    }

    /// The deepest expressions accepted evaluate on a thread with the 2 MiB stack of a Tokio
    /// worker, where moves evaluate criteria.
    #[test]
    fn expressions_at_the_depth_limit_evaluate_on_a_small_stack() {
        let near = MAX_DEPTH - 2;
        let shapes = [
            format!("{}1 > 0", "1 + ".repeat(near)),
            format!("{}true", "!".repeat(near)),
            format!(
                "{}lead.title{} >= 0",
                "size(".repeat(near / 2),
                ")".repeat(near / 2)
            ),
            format!(
                "{}true{}",
                "[".repeat(near / 2),
                "]".repeat(near / 2) + " != []"
            ),
            format!("{}true", "true ? true : ".repeat(near)),
            format!("{}lead.amount.value > 1.0", "-".repeat(near)),
        ];
        let mut compiled = 0;
        for expression in shapes {
            let Ok(program) = compile(&expression) else {
                continue;
            };
            compiled += 1;
            std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || {
                    let _ = evaluate(&program, &lead());
                })
                .unwrap()
                .join()
                .expect("evaluates without overflowing the stack");
        }
        assert!(
            compiled >= 3,
            "most shapes compile at the limit ({compiled})"
        );
    }

    #[test]
    fn long_chains_of_unary_operators_are_refused() {
        for op in ["!", "-", "! "] {
            let operand = if op.trim() == "!" { "true" } else { "1 > 0" };
            let at_limit = format!("{}{operand}", op.repeat(MAX_DEPTH));
            assert!(compile(&at_limit).is_ok(), "{at_limit}");
            let over = format!("{}{operand}", op.repeat(MAX_DEPTH + 1));
            let error = compile(&over).unwrap_err();
            assert!(error.message.contains("repeated more than 32"), "{error}");
            assert_eq!(error.column, op.len() * MAX_DEPTH + 1, "{error}");
        }
        let longest = format!("{}true", "!".repeat(MAX_EXPRESSION_LEN - 4));
        assert!(compile(&longest).is_err());
        // `!=`, subtraction and operators inside strings are not chains.
        let fine = format!(
            "lead.title != \"{}\" && 1 - -1 == 2 && !(lead.title != \"x\")",
            "!".repeat(100)
        );
        assert!(compile(&fine).is_ok(), "{:?}", compile(&fine).err());
    }

    #[test]
    fn compiled_expressions_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<CompiledExpression>();
        assert_send_sync::<Arc<CompiledExpression>>();
    }

    #[test]
    fn empty_and_oversized_expressions_are_refused() {
        assert!(compile("").is_err());
        assert!(compile("   ").is_err());
        let long = format!("true{}", " ".repeat(MAX_EXPRESSION_LEN));
        let error = compile(&long).unwrap_err();
        assert!(error.message.contains("at most 4096 bytes"), "{error}");
    }

    #[test]
    fn parse_errors_have_a_position() {
        let error = compile("lead.title == ").unwrap_err();
        assert_eq!(error.line, 1);
        assert!(error.column > 1, "{error}");
        assert!(error.to_string().starts_with("line 1, column "), "{error}");

        let error = compile("true &&\n  (lead.title == \"x\"").unwrap_err();
        assert_eq!(error.line, 2, "{error}");
    }

    #[test]
    fn misspelled_fields_are_refused_with_their_position() {
        let error = compile("lead.amout.value > 0.0").unwrap_err();
        assert!(error.message.contains("no field \"amout\""), "{error}");
        assert_eq!((error.line, error.column), (1, 5), "{error}");

        let error = compile("lead.bant.budget.valeu > 0.0").unwrap_err();
        assert!(
            error.message.contains("lead.bant.budget has no field"),
            "{error}"
        );

        // Also in a branch the sample leads never reach, and through indexing.
        assert!(compile("false && lead.titel == \"x\"").is_err());
        assert!(compile("lead[\"amout\"].value > 0.0").is_err());
        assert!(compile("lead.title.size > 0").is_err());
        assert!(compile("has(lead.amout)").is_err());
    }

    #[test]
    fn unknown_variables_functions_and_types_are_refused() {
        let error = compile("lead.title == \"x\" || leed.title == \"y\"").unwrap_err();
        assert!(error.message.contains("leed"), "{error}");
        assert_eq!(error.column, 22, "{error}");
        assert!(compile("nosuchfn(lead.title)").is_err());
        assert!(compile("lead.amount > 0").is_err());
        assert!(compile("lead.title > 3").is_err());
        assert!(compile("lead.amount.value").is_err());
        assert!(compile("lead.title").is_err());
    }

    #[test]
    fn legitimate_expressions_compile() {
        for ok in [
            "lead.amount.value > 0.0 && lead.bant.authority != \"\"",
            "lead.amount.value > 0",
            "lead.labels.region == \"emea\"",
            "has(lead.labels.region)",
            "\"region\" in lead.labels",
            "lead.labels.exists(k, k == \"tier\")",
            "lead.expected_close_time < timestamp(\"2030-01-01T00:00:00Z\")",
            "lead.has_bant_timeline && lead.bant.timeline > timestamp(\"2020-01-01T00:00:00Z\")",
            "lead.amount.currency_code in [\"EUR\", \"USD\"]",
            "[1, 2].all(lead, lead > 0)",
            "size(lead.title) < 100",
        ] {
            compile(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn the_lead_variable_matches_the_documentation() {
        let mut lead = lead();
        assert_eq!(eval("lead.amount.value == 0.0", &lead), Ok(true));
        assert_eq!(eval("lead.amount.currency_code == \"\"", &lead), Ok(true));
        assert_eq!(eval("lead.bant.budget.value == 0.0", &lead), Ok(true));
        assert_eq!(eval("lead.bant.timeline == null", &lead), Ok(true));
        assert_eq!(eval("lead.expected_close_time == null", &lead), Ok(true));
        assert_eq!(eval("!lead.has_bant_timeline", &lead), Ok(true));
        assert_eq!(eval("lead.pipeline_id == \"default\"", &lead), Ok(true));
        assert_eq!(eval("lead.stage == \"sample\"", &lead), Ok(true));

        lead.fields.contact_name = "  Dana  ".into();
        lead.fields.bant.need = "   ".into();
        lead.fields.amount = Some(Money::parse("USD", 12, 500_000_000).unwrap());
        lead.fields.expected_close_time = Some("2030-01-02T00:00:00Z".parse().unwrap());
        lead.fields.labels.insert("region".into(), " emea ".into());
        assert_eq!(eval("lead.contact_name == \"Dana\"", &lead), Ok(true));
        assert_eq!(eval("lead.bant.need == \"\"", &lead), Ok(true));
        assert_eq!(eval("lead.amount.value == 12.5", &lead), Ok(true));
        assert_eq!(
            eval("lead.amount.currency_code == \"USD\"", &lead),
            Ok(true)
        );
        assert_eq!(eval("lead.has_expected_close_time", &lead), Ok(true));
        assert_eq!(
            eval(
                "lead.expected_close_time == timestamp(\"2030-01-02T00:00:00Z\")",
                &lead
            ),
            Ok(true)
        );
        assert_eq!(eval("lead.labels.region == \"emea\"", &lead), Ok(true));
    }

    #[test]
    fn runtime_errors_and_non_bools_are_errors() {
        let lead = lead();
        // A missing label is a runtime error, which callers treat as "not met".
        let error = eval("lead.labels.region == \"emea\"", &lead).unwrap_err();
        assert!(error.contains("region"), "{error}");
        assert!(
            eval(
                "lead.expected_close_time < timestamp(\"2030-01-01T00:00:00Z\")",
                &lead
            )
            .is_err()
        );
    }

    #[test]
    fn evaluate_all_keeps_the_order() {
        let exprs = ["true", "false", "lead.labels.x == \"y\""].map(|e| compile(e).unwrap());
        let results = evaluate_all(exprs.iter(), &lead());
        assert_eq!(results[0], Ok(true));
        assert_eq!(results[1], Ok(false));
        assert!(results[2].is_err());
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_and_column("abc", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("é.x", 3), (1, 3));
    }
}
