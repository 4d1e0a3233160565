//! A static upper bound on what evaluating a criterion can cost, computed from its syntax tree
//! when a pipeline is saved, so that an expression whose evaluation would take seconds is refused
//! before it is ever run (the dry run included). The same idea as the cost estimate Kubernetes
//! applies to CEL in admission policies.
//!
//! The unit is one evaluation step: visiting a node of the tree, visiting one element of a list
//! or one entry of a map, or reading [`BYTES_PER_UNIT`] bytes of text. Every rule over-estimates:
//! sizes come from the domain's limits on a lead (the longest text a field may hold, the most
//! labels a lead may carry), a comprehension's iteration count from the largest its range can
//! be, and whatever cannot be bounded precisely is bounded by something larger. Arithmetic
//! saturates, so an absurd expression costs [`u64::MAX`] rather than wrapping to a small number.

use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedEntryExpr, IdedExpr, LiteralValue, operators,
};

use crate::lead::{
    MAX_EMAIL_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_LOST_REASON_LEN, MAX_TEXT_LEN,
};

/// Estimated evaluation cost, in the unit described in the module documentation.
pub type Cost = u64;

/// The most one criterion may cost: an order of magnitude above the criteria written to check a
/// lead (BANT checks, label lookups, a membership test against a few dozen values, a
/// comprehension over the labels), and well under a millisecond of evaluation for the shapes
/// that do the most work per unit (BENCHMARKS.md, section 7).
pub const MAX_CRITERION_COST: Cost = 20_000;

/// The most the criteria of one stage may cost together. A move evaluates the criteria of its
/// target stage only, so this bounds the criteria's share of any move, however many stages and
/// criteria the pipeline has.
pub const MAX_STAGE_COST: Cost = 50_000;

/// Bytes of text read per unit: comparing or scanning text is far cheaper per byte than
/// evaluating a node.
pub const BYTES_PER_UNIT: u64 = 64;

/// `matches` compiles its pattern on every call, which costs far more than matching. Charged
/// per call, plus this per byte of the pattern as counted repetitions expand it: `(ab|cd){20}`
/// compiles like its 20 copies.
const REGEX_COMPILE_COST: Cost = 800;
const REGEX_COST_PER_PATTERN_BYTE: Cost = 5;

/// Lead text limits are in characters; costs are in bytes.
const MAX_UTF8_BYTES: u64 = 4;
/// Stage keys, pipeline ids, label keys and the like are ASCII slugs of at most this length.
const MAX_SLUG_LEN: u64 = 63;
/// The longest text `string()` makes of a number, bool, timestamp or duration.
const MAX_FORMATTED_LEN: u64 = 64;
/// A bound on how much estimation work one expression may take: nested `map`s re-estimate
/// their step, so the estimator's own work could otherwise grow exponentially with nesting.
const MAX_ESTIMATION_STEPS: u64 = 200_000;

/// Estimates the cost of evaluating `expr` once, with `lead` bound as documented on
/// `Criterion.expression`.
pub fn estimate(expr: &IdedExpr) -> Cost {
    let mut estimator = Estimator {
        scopes: Vec::new(),
        steps: 0,
    };
    let estimate = estimator.estimate(expr);
    if estimator.steps > MAX_ESTIMATION_STEPS {
        Cost::MAX
    } else {
        estimate.cost
    }
}

/// An upper bound on a value: its kind and its largest size.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// No value: the elements of an empty list.
    Never,
    /// A bool, number, null, timestamp, duration, type or optional marker.
    Scalar,
    /// A string or bytes of at most this many bytes.
    Text(u64),
    /// At most `.0` elements, each within `.1`.
    List(u64, Box<Shape>),
    /// At most `.0` entries, keys within `.1`, values within `.2`.
    Map(u64, Box<Shape>, Box<Shape>),
    /// A part of the `lead` variable, whose fields are known one by one.
    Record(Record),
    /// Anything whose footprint is at most this many units.
    Any(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Lead,
    Money,
    Bant,
}

impl Record {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Record::Lead => super::LEAD_FIELDS,
            Record::Money => super::MONEY_FIELDS,
            Record::Bant => super::BANT_FIELDS,
        }
    }

    /// Mirrors `lead_value` in the parent module and the limits of `domain::lead`.
    fn field(self, name: &str) -> Option<Shape> {
        let text = |chars: usize| Shape::Text(chars as u64 * MAX_UTF8_BYTES);
        Some(match (self, name) {
            (Record::Lead, "title" | "company" | "contact_name" | "owner" | "source")
            | (Record::Bant, "authority" | "need") => text(MAX_TEXT_LEN),
            (Record::Lead, "contact_email") => text(MAX_EMAIL_LEN),
            (Record::Lead, "pipeline_id" | "stage") => Shape::Text(MAX_SLUG_LEN),
            (Record::Lead, "lost_reason") => text(MAX_LOST_REASON_LEN),
            (Record::Lead, "amount") | (Record::Bant, "budget") => Shape::Record(Record::Money),
            (Record::Lead, "bant") => Shape::Record(Record::Bant),
            (
                Record::Lead,
                "expected_close_time" | "has_bant_timeline" | "has_expected_close_time",
            )
            | (Record::Money, "value")
            | (Record::Bant, "timeline") => Shape::Scalar,
            (Record::Lead, "labels") => Shape::Map(
                MAX_LABELS as u64,
                Box::new(Shape::Text(MAX_SLUG_LEN)),
                Box::new(text(MAX_LABEL_VALUE_LEN)),
            ),
            (Record::Money, "currency_code") => Shape::Text(3),
            _ => return None,
        })
    }

    /// Any one field: what a computed key may select.
    fn any_field(self) -> Shape {
        self.fields()
            .iter()
            .filter_map(|f| self.field(f))
            .fold(Shape::Never, join)
    }

    fn footprint(self) -> u64 {
        self.fields()
            .iter()
            .filter_map(|f| self.field(f))
            .fold(1, |sum, shape| {
                sum.saturating_add(footprint(&shape)).saturating_add(1)
            })
    }
}

/// The units it takes to visit the whole value once: to compare, copy or hash it.
fn footprint(shape: &Shape) -> u64 {
    match shape {
        Shape::Never => 0,
        Shape::Scalar => 1,
        Shape::Text(bytes) => bytes.div_ceil(BYTES_PER_UNIT).saturating_add(1),
        Shape::List(len, elem) => 1u64.saturating_add(len.saturating_mul(footprint(elem))),
        Shape::Map(len, key, value) => {
            1u64.saturating_add(len.saturating_mul(footprint(key).saturating_add(footprint(value))))
        }
        Shape::Record(record) => record.footprint(),
        Shape::Any(units) => *units,
    }
}

/// The least shape covering both.
fn join(a: Shape, b: Shape) -> Shape {
    match (a, b) {
        (Shape::Never, x) | (x, Shape::Never) => x,
        (Shape::Scalar, Shape::Scalar) => Shape::Scalar,
        (Shape::Text(x), Shape::Text(y)) => Shape::Text(x.max(y)),
        (Shape::List(n, e), Shape::List(m, f)) => Shape::List(n.max(m), Box::new(join(*e, *f))),
        (Shape::Map(n, k, v), Shape::Map(m, l, w)) => {
            Shape::Map(n.max(m), Box::new(join(*k, *l)), Box::new(join(*v, *w)))
        }
        (Shape::Record(r), Shape::Record(s)) if r == s => Shape::Record(r),
        (a, b) => Shape::Any(footprint(&a).max(footprint(&b))),
    }
}

/// How many times a comprehension over a value of this shape iterates at most, and what it
/// binds on each iteration (elements of a list, keys of a map).
fn iteration(shape: &Shape) -> (u64, Shape) {
    match shape {
        Shape::Never | Shape::Scalar => (0, Shape::Never),
        Shape::Text(bytes) => (*bytes, Shape::Text(MAX_UTF8_BYTES)),
        Shape::List(len, elem) => (*len, (**elem).clone()),
        Shape::Map(len, key, _) => (*len, (**key).clone()),
        Shape::Record(record) => (record.fields().len() as u64, Shape::Text(MAX_FORMATTED_LEN)),
        Shape::Any(units) => (*units, Shape::Any(*units)),
    }
}

/// What indexing a value of this shape yields, `key` being the index when it is a literal.
fn element(shape: &Shape, key: Option<&str>) -> Shape {
    match shape {
        Shape::List(_, elem) => (**elem).clone(),
        Shape::Map(_, _, value) => (**value).clone(),
        Shape::Record(record) => key
            .and_then(|k| record.field(k))
            .unwrap_or_else(|| record.any_field()),
        Shape::Any(units) => Shape::Any(*units),
        Shape::Never | Shape::Scalar | Shape::Text(_) => Shape::Never,
    }
}

/// The bytes of text a value of this shape can be formatted as.
fn text_len(shape: &Shape) -> u64 {
    match shape {
        Shape::Text(bytes) => *bytes,
        Shape::Never | Shape::Scalar => MAX_FORMATTED_LEN,
        other => footprint(other).saturating_mul(BYTES_PER_UNIT),
    }
}

/// The shape of `a + b` and the cost of building it.
fn concatenation(a: &Shape, b: &Shape) -> (Shape, Cost) {
    match (a, b) {
        (Shape::Scalar, Shape::Scalar) => (Shape::Scalar, 1),
        (Shape::Text(x), Shape::Text(y)) => {
            let shape = Shape::Text(x.saturating_add(*y));
            let cost = footprint(&shape);
            (shape, cost)
        }
        (Shape::List(n, e), Shape::List(m, f)) => {
            let shape = Shape::List(n.saturating_add(*m), Box::new(join(*e.clone(), *f.clone())));
            let cost = footprint(&shape);
            (shape, cost)
        }
        (Shape::Never, x) | (x, Shape::Never) => (x.clone(), footprint(x)),
        (a, b) => {
            let units = footprint(a).saturating_add(footprint(b));
            (Shape::Any(units), units)
        }
    }
}

/// The cost of `x in container`.
fn membership(x: &Shape, container: &Shape) -> Cost {
    let probe = footprint(x);
    match container {
        Shape::List(len, elem) => len.saturating_mul(probe.min(footprint(elem)).saturating_add(1)),
        Shape::Map(..) | Shape::Record(_) => probe.saturating_add(1),
        Shape::Any(units) => units.saturating_mul(probe.min(*units).saturating_add(1)),
        Shape::Never | Shape::Scalar | Shape::Text(_) => 1,
    }
}

#[derive(Debug, Clone)]
struct Estimate {
    cost: Cost,
    shape: Shape,
}

impl Estimate {
    fn new(cost: Cost, shape: Shape) -> Self {
        Self { cost, shape }
    }
}

struct Estimator {
    /// Comprehension variables, innermost last.
    scopes: Vec<(String, Shape)>,
    steps: u64,
}

impl Estimator {
    fn estimate(&mut self, node: &IdedExpr) -> Estimate {
        self.steps += 1;
        if self.steps > MAX_ESTIMATION_STEPS {
            return Estimate::new(Cost::MAX, Shape::Any(u64::MAX));
        }
        match &node.expr {
            Expr::Unspecified => Estimate::new(1, Shape::Never),
            Expr::Literal(literal) => Estimate::new(1, literal_shape(literal)),
            Expr::Ident(name) => Estimate::new(1, self.lookup(name)),
            Expr::Select(select) => {
                let operand = self.estimate(&select.operand);
                let lookup = 1 + (select.field.len() as u64).div_ceil(BYTES_PER_UNIT);
                let shape = if select.test {
                    Shape::Scalar
                } else {
                    element(&operand.shape, Some(&select.field))
                };
                Estimate::new(operand.cost.saturating_add(lookup), shape)
            }
            Expr::List(list) => {
                let mut cost: Cost = 1;
                let mut elem = Shape::Never;
                for e in &list.elements {
                    let e = self.estimate(e);
                    cost = cost.saturating_add(e.cost).saturating_add(1);
                    elem = join(elem, e.shape);
                }
                Estimate::new(
                    cost,
                    Shape::List(list.elements.len() as u64, Box::new(elem)),
                )
            }
            Expr::Map(map) => self.entries(&map.entries),
            Expr::Struct(st) => {
                let entries = self.entries(&st.entries);
                let units = footprint(&entries.shape);
                Estimate::new(entries.cost, Shape::Any(units))
            }
            Expr::Call(call) => self.call(call),
            Expr::Comprehension(c) => self.comprehension(c),
        }
    }

    fn lookup(&self, name: &str) -> Shape {
        if let Some((_, shape)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return shape.clone();
        }
        match name {
            "lead" => Shape::Record(Record::Lead),
            // Any other name is a type or a namespace, or evaluation stops on it.
            _ => Shape::Scalar,
        }
    }

    fn entries(&mut self, entries: &[IdedEntryExpr]) -> Estimate {
        let mut cost: Cost = 1;
        let (mut keys, mut values) = (Shape::Never, Shape::Never);
        for entry in entries {
            let (key, value) = match &entry.expr {
                EntryExpr::MapEntry(e) => (Some(self.estimate(&e.key)), self.estimate(&e.value)),
                EntryExpr::StructField(e) => (None, self.estimate(&e.value)),
            };
            let key = key.unwrap_or_else(|| Estimate::new(1, Shape::Text(MAX_FORMATTED_LEN)));
            // Inserting hashes the key.
            cost = cost
                .saturating_add(key.cost)
                .saturating_add(value.cost)
                .saturating_add(footprint(&key.shape));
            keys = join(keys, key.shape);
            values = join(values, value.shape);
        }
        Estimate::new(
            cost,
            Shape::Map(entries.len() as u64, Box::new(keys), Box::new(values)),
        )
    }

    fn call(&mut self, call: &CallExpr) -> Estimate {
        let name = call.func_name.as_str();
        if name == operators::CONDITIONAL && call.args.len() == 3 {
            let condition = self.estimate(&call.args[0]);
            let yes = self.estimate(&call.args[1]);
            let no = self.estimate(&call.args[2]);
            return Estimate::new(
                condition
                    .cost
                    .saturating_add(yes.cost.max(no.cost))
                    .saturating_add(1),
                join(yes.shape, no.shape),
            );
        }
        let mut operands: Vec<Estimate> = Vec::with_capacity(call.args.len() + 1);
        if let Some(target) = &call.target {
            operands.push(self.estimate(target));
        }
        for arg in &call.args {
            operands.push(self.estimate(arg));
        }
        let evaluated = operands
            .iter()
            .fold(1, |sum: Cost, o| sum.saturating_add(o.cost));
        let shapes: Vec<&Shape> = operands.iter().map(|o| &o.shape).collect();
        let all_footprints = shapes
            .iter()
            .fold(0, |sum: u64, s| sum.saturating_add(footprint(s)));
        let (work, shape) = match (name, shapes.as_slice()) {
            (
                operators::LOGICAL_AND
                | operators::LOGICAL_OR
                | operators::LOGICAL_NOT
                | operators::NOT_STRICTLY_FALSE
                | operators::SUBSTRACT
                | operators::MULTIPLY
                | operators::DIVIDE
                | operators::MODULO
                | operators::NEGATE,
                _,
            ) => (1, Shape::Scalar),
            (
                operators::EQUALS
                | operators::NOT_EQUALS
                | operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                [a, b],
            ) => (
                footprint(a).min(footprint(b)).saturating_add(1),
                Shape::Scalar,
            ),
            (operators::ADD, [a, b]) => {
                let (shape, cost) = concatenation(a, b);
                (cost, shape)
            }
            (operators::INDEX | operators::OPT_INDEX, [container, index]) => {
                let key = match call.args.get(1).map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::String(s))) => Some(s.inner().to_owned()),
                    _ => None,
                };
                (
                    footprint(index).saturating_add(1),
                    element(container, key.as_deref()),
                )
            }
            (operators::OPT_SELECT, [container, _]) => (1, element(container, None)),
            (operators::IN, [x, container]) => (membership(x, container), Shape::Scalar),
            ("size" | "contains" | "startsWith" | "endsWith", _) => {
                (all_footprints.saturating_add(1), Shape::Scalar)
            }
            ("matches", [text, _]) => {
                let pattern = match &call.args.last().map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::String(s))) => expanded_len(s.inner()),
                    // A pattern computed at run time can repeat anything any number of times.
                    _ => u64::MAX,
                };
                (
                    REGEX_COMPILE_COST
                        .saturating_add(pattern.saturating_mul(REGEX_COST_PER_PATTERN_BYTE))
                        .saturating_add(footprint(text)),
                    Shape::Scalar,
                )
            }
            ("string" | "bytes", [value]) => (
                footprint(value).saturating_add(1),
                Shape::Text(text_len(value)),
            ),
            ("dyn", [value]) => (1, (*value).clone()),
            _ => {
                // Conversions, timestamp accessors, optionals, and anything undeclared (which
                // fails when reached): they read their operands at most once and return
                // something no larger than them.
                let shape = if call.target.is_none() && call.args.is_empty() {
                    Shape::Scalar
                } else {
                    shapes
                        .iter()
                        .fold(Shape::Scalar, |acc, s| join(acc, (*s).clone()))
                };
                (all_footprints.saturating_add(1), shape)
            }
        };
        Estimate::new(evaluated.saturating_add(work), shape)
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> Estimate {
        let range = self.estimate(&c.iter_range);
        let init = self.estimate(&c.accu_init);
        let (iterations, item) = iteration(&range.shape);
        let bound_before = self.scopes.len();
        // A second iteration variable binds the index (lists) or the value (maps).
        if let Some(second) = &c.iter_var2 {
            self.scopes.push((c.iter_var.clone(), Shape::Scalar));
            self.scopes
                .push((second.clone(), join(item, element(&range.shape, None))));
        } else {
            self.scopes.push((c.iter_var.clone(), item));
        }
        let (accu, step) = self.accumulator(c, init.shape, iterations);
        self.scopes.push((c.accu_var.clone(), accu));
        // Each iteration costs at most what the last, with the largest accumulator, costs.
        let step = step.unwrap_or_else(|| self.estimate(&c.loop_step).cost);
        let per_iteration = self
            .estimate(&c.loop_cond)
            .cost
            .saturating_add(step)
            .saturating_add(1);
        let result = self.estimate(&c.result);
        self.scopes.truncate(bound_before);
        Estimate::new(
            range
                .cost
                .saturating_add(init.cost)
                .saturating_add(iterations.saturating_mul(per_iteration))
                .saturating_add(result.cost),
            result.shape,
        )
    }

    /// The largest the accumulator grows to, and the step's cost if the accumulator never
    /// grows. The standard macros' steps either keep it as it is (`all`, `exists`,
    /// `exists_one`, and the bindings of `optMap`) or append one element per iteration
    /// (`map`, `filter`): growth is read off two steps and extrapolated linearly, and a step
    /// growing it faster than that makes it unbounded.
    fn accumulator(
        &mut self,
        c: &ComprehensionExpr,
        init: Shape,
        iterations: u64,
    ) -> (Shape, Option<Cost>) {
        let step = |this: &mut Self, accu: &Shape| {
            this.scopes.push((c.accu_var.clone(), accu.clone()));
            let next = this.estimate(&c.loop_step);
            this.scopes.pop();
            (join(accu.clone(), next.shape), next.cost)
        };
        let (first, cost) = step(self, &init);
        if first == init {
            return (init, Some(cost));
        }
        if iterations == 0 {
            return (init, None);
        }
        let (second, _) = step(self, &first);
        let grown = match (&init, &first, &second) {
            (Shape::List(..) | Shape::Never, Shape::List(n1, _), Shape::List(n2, elem)) => {
                linear(list_len(&init), *n1, *n2, iterations)
                    .map(|len| Shape::List(len, elem.clone()))
            }
            (Shape::Text(n0), Shape::Text(n1), Shape::Text(n2)) => {
                linear(*n0, *n1, *n2, iterations).map(Shape::Text)
            }
            _ => linear(
                footprint(&init),
                footprint(&first),
                footprint(&second),
                iterations,
            )
            .map(Shape::Any),
        };
        (grown.unwrap_or(Shape::Any(u64::MAX)), None)
    }
}

/// The size after `iterations` steps that took it from `s0` to `s1` to `s2`, if it grows no
/// faster than linearly.
fn linear(s0: u64, s1: u64, s2: u64, iterations: u64) -> Option<u64> {
    let (d1, d2) = (s1.saturating_sub(s0), s2.saturating_sub(s1));
    (d2 <= d1).then(|| s0.saturating_add(d1.saturating_mul(iterations)))
}

fn list_len(shape: &Shape) -> u64 {
    match shape {
        Shape::List(n, _) => *n,
        _ => 0,
    }
}

/// An upper bound on the length of `pattern` with its counted repetitions (`{n}`, `{n,}`,
/// `{n,m}`) written out: its length times the product of their counts, as if every one applied
/// to the whole pattern.
fn expanded_len(pattern: &str) -> u64 {
    let mut expanded = pattern.len() as u64;
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else { break };
        let counts = rest[..close].split(',').map(str::trim);
        let largest = counts.filter_map(|c| c.parse::<u64>().ok()).max();
        if let Some(count) = largest {
            expanded = expanded.saturating_mul(count.max(1));
        }
        rest = &rest[close + 1..];
    }
    expanded
}

fn literal_shape(literal: &LiteralValue) -> Shape {
    match literal {
        LiteralValue::String(s) => Shape::Text(s.inner().len() as u64),
        LiteralValue::Bytes(b) => Shape::Text(b.inner().len() as u64),
        _ => Shape::Scalar,
    }
}

/// Expressions of a known estimated cost, for the tests of this crate and the crates built on it.
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    use super::*;

    pub fn cost_of(expression: &str) -> Cost {
        let program = cel::Env::stdlib().compile(expression).expect("parses");
        estimate(program.expression())
    }

    pub fn ints(n: usize) -> String {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(","))
    }

    /// A nested comprehension whose estimated cost is within `low..=high`.
    pub fn costing_between(low: Cost, high: Cost) -> String {
        (2..400)
            .map(|n| format!("{}.all(x, {}.all(y, x != y || x >= 0))", ints(n), ints(n)))
            .find(|e| (low..=high).contains(&cost_of(e)))
            .expect("some size lands in the range")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::testing::{cost_of, ints};
    use super::*;
    use crate::policy::default_pipeline;

    /// A hostile criterion: three nested `all` over list literals of 300 elements, 1.8 KB.
    pub(crate) fn cube() -> String {
        let list = format!("[{}]", vec!["1"; 300].join(","));
        format!("{list}.all(x, {list}.all(y, {list}.all(z, x == y && y == z)))")
    }

    #[test]
    fn realistic_criteria_are_far_below_the_limit() {
        let words: Vec<String> = (0..36).map(|i| format!("\"source-{i:02}\"")).collect();
        let mut criteria: Vec<String> = default_pipeline()
            .stages
            .iter()
            .flat_map(|s| s.entry_criteria.iter().map(|c| c.expression.clone()))
            .collect();
        criteria.extend(
            [
                "lead.amount.value > 0.0 && lead.bant.authority != \"\"",
                "lead.labels.region == \"emea\"",
                "has(lead.labels.region) && lead.labels.region in [\"emea\", \"apac\"]",
                "\"region\" in lead.labels",
                "lead.has_bant_timeline && lead.bant.timeline > timestamp(\"2020-01-01T00:00:00Z\")",
                "lead.contact_email.matches(\"@example\\\\.com$\")",
            ]
            .map(String::from),
        );
        criteria.push(format!("lead.source in [{}]", words.join(",")));
        for expression in criteria {
            let cost = cost_of(&expression);
            assert!(cost <= MAX_CRITERION_COST / 20, "{expression}: {cost}");
        }
        // A comprehension over every label does real work per label, and still fits eight
        // times over.
        for expression in [
            "lead.labels.exists(k, k == \"tier\")",
            "lead.labels.exists(k, k.startsWith(\"tier\") && lead.labels[k] == \"gold\")",
            "lead.labels.all(k, size(lead.labels[k]) < 100)",
        ] {
            let cost = cost_of(expression);
            assert!(cost <= MAX_CRITERION_COST / 8, "{expression}: {cost}");
        }
        let default = default_pipeline();
        let default_stage_costs = default.stages.iter().map(|s| {
            s.entry_criteria
                .iter()
                .map(|c| cost_of(&c.expression))
                .sum::<Cost>()
        });
        assert!(default_stage_costs.max().unwrap() < 100);
    }

    #[test]
    fn nesting_multiplies() {
        let one = |n| cost_of(&format!("{}.all(x, x > 0)", ints(n)));
        let two = |n| cost_of(&format!("{}.all(x, {}.all(y, x != y))", ints(n), ints(n)));
        let three = |n| {
            cost_of(&format!(
                "{}.all(x, {}.all(y, {}.all(z, x + y + z > 0)))",
                ints(n),
                ints(n),
                ints(n)
            ))
        };
        assert!(one(40) >= 40 && one(40) < 40 * 20);
        assert!(two(40) >= 40 * 40);
        assert!(three(40) >= 40 * 40 * 40);
        // Doubling the lists doubles, quadruples, octuples the cost.
        for (cost, power) in [(&one as &dyn Fn(usize) -> Cost, 1), (&two, 2), (&three, 3)] {
            let ratio = cost(40) as f64 / cost(20) as f64;
            let expected = 2f64.powi(power);
            assert!(
                (ratio - expected).abs() < expected * 0.15,
                "{power}: {ratio}"
            );
        }
    }

    #[test]
    fn the_issue_s_criterion_is_far_above_the_limit() {
        let cube = cube();
        assert!((1_800..1_900).contains(&cube.len()), "{}", cube.len());
        assert!(cost_of(&cube) > 300 * 300 * 300);
        assert!(cost_of(&cube) > 100 * MAX_CRITERION_COST);
    }

    #[test]
    fn lead_sizes_come_from_the_domain_limits() {
        let labels = cost_of("lead.labels.exists(k, true)");
        assert!(labels >= MAX_LABELS as Cost, "{labels}");
        assert!(labels < 20 * MAX_LABELS as Cost, "{labels}");
        // Lost reasons are the longest texts; comparing two bounds the work by the shorter.
        let long = cost_of("lead.lost_reason == lead.lost_reason");
        let bytes = (MAX_LOST_REASON_LEN as u64) * MAX_UTF8_BYTES;
        assert!(long >= bytes / BYTES_PER_UNIT, "{long}");
        assert!(cost_of("lead.lost_reason == \"x\"") < 10);
        // Scanning every label value for a word reads them all.
        let scan = cost_of("lead.labels.exists(k, lead.labels[k].contains(\"x\"))");
        let values = (MAX_LABELS * MAX_LABEL_VALUE_LEN) as u64 * MAX_UTF8_BYTES;
        assert!(scan >= values / BYTES_PER_UNIT, "{scan}");
    }

    #[test]
    fn map_results_grow_and_are_paid_for_where_used() {
        let built = cost_of(&format!("{}.map(x, {}).size() > 0", ints(50), ints(50)));
        assert!(built >= 50 * 50, "{built}");
        // Iterating what `map` built iterates every element of it.
        let used = cost_of(&format!(
            "{}.map(x, x).all(y, {}.map(z, z).exists(w, w == y))",
            ints(60),
            ints(60)
        ));
        assert!(used >= 60 * 60, "{used}");
        let filtered = cost_of(&format!("{}.filter(x, x > 1).all(y, y > 0)", ints(60)));
        assert!(filtered >= 2 * 60, "{filtered}");
    }

    #[test]
    fn membership_and_equality_scale_with_their_operands() {
        let small = cost_of(&format!("1 in {}", ints(10)));
        let large = cost_of(&format!("1 in {}", ints(100)));
        assert!(large >= 9 * small / 2, "{small} {large}");
        let lists = cost_of(&format!("{} == {}", ints(100), ints(100)));
        assert!(lists >= 100, "{lists}");
    }

    #[test]
    fn regular_expressions_are_charged_for_compiling() {
        let plain = cost_of("lead.title.startsWith(\"a\")");
        let regex = cost_of("lead.title.matches(\"a\")");
        assert!(regex >= plain + REGEX_COMPILE_COST, "{plain} {regex}");
        let longer = cost_of("lead.title.matches(\"(ab){500}\")");
        assert!(
            longer >= regex + 500 * 4 * REGEX_COST_PER_PATTERN_BYTE,
            "{longer}"
        );
        // A pattern computed at run time has no bound.
        assert!(cost_of("lead.title.matches(lead.source)") > MAX_CRITERION_COST);
        assert_eq!(expanded_len("^(ab|cd){20}x$"), 14 * 20);
        assert_eq!(expanded_len("a{2,5}b{3,}c{x}"), 15 * 5 * 3);
        // In a comprehension, the pattern is compiled on every iteration.
        let looped = cost_of(&format!("{}.all(x, lead.title.matches(\"a\"))", ints(50)));
        assert!(looped >= 50 * REGEX_COMPILE_COST, "{looped}");
    }

    #[test]
    fn unknown_shapes_are_bounded_conservatively() {
        let labels = cost_of("lead.labels.exists(k, true)");
        let hidden = cost_of("dyn(lead.labels).exists(k, true)");
        assert!(hidden >= labels, "{labels} {hidden}");
        let mixed = cost_of("[1, \"a\", [1, 2]].exists(x, x == x)");
        assert!(mixed >= 3, "{mixed}");
        // A comprehension variable named `lead` hides the lead.
        assert!(cost_of("[1, 2].all(lead, lead > 0)") < 50);
    }

    #[test]
    fn absurd_expressions_saturate_quickly() {
        let list = ints(200);
        let mut nested = "x > 0".to_string();
        for _ in 0..8 {
            nested = format!("{list}.all(x, {nested})");
        }
        assert_eq!(cost_of(&nested), Cost::MAX);
        // Nested maps re-estimate their steps; the estimator's own work is bounded.
        let mut maps = "[1, 2]".to_string();
        for _ in 0..14 {
            maps = format!("[1, 2].map(x, {maps})");
        }
        let started = std::time::Instant::now();
        assert!(cost_of(&format!("{maps} != []")) > MAX_CRITERION_COST);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
