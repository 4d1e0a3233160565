//! What evaluating a criterion takes against its estimated cost (`domain::criteria::cost`), to
//! calibrate the cost limits: the time per unit of the shapes that do the most work per unit
//! (nested comprehensions, growing `map` results, text scans, regular expressions) sets how
//! long a criterion at the limit may run. Run with `cargo bench --bench criteria_cost`; each
//! case prints its estimated cost first.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use leadpipe::domain::criteria::cost::{MAX_CRITERION_COST, MAX_STAGE_COST};
use leadpipe::domain::criteria::{self, Activation};
use leadpipe::domain::ids::{LeadId, PipelineId, StageKey};
use leadpipe::domain::lead::{
    Bant, Lead, LeadFields, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_LOST_REASON_LEN, MAX_TEXT_LEN,
};
use leadpipe::domain::money::Money;
use leadpipe::domain::policy::{self, default_pipeline};

/// A lead with every text at its longest and every label set: the most work a criterion can
/// be given.
fn full_lead() -> Lead {
    let now = Utc::now();
    let text = |c: char| c.to_string().repeat(MAX_TEXT_LEN);
    let money = Money::parse("EUR", 5000, 0).ok();
    let labels: BTreeMap<String, String> = (0..MAX_LABELS)
        .map(|i| (format!("label_{i:02}"), "v".repeat(MAX_LABEL_VALUE_LEN)))
        .collect();
    Lead {
        id: LeadId::generate(),
        fields: LeadFields {
            title: text('t'),
            company: text('c'),
            contact_name: text('n'),
            contact_email: "dana@example.com".into(),
            owner: text('o'),
            source: text('s'),
            amount: money.clone(),
            bant: Bant {
                budget: money,
                authority: text('a'),
                need: text('e'),
                timeline: Some(now),
            },
            expected_close_time: Some(now),
            labels,
            lost_reason: "r".repeat(MAX_LOST_REASON_LEN),
        },
        pipeline_id: PipelineId::default_pipeline(),
        stage: StageKey::parse("proposal").expect("a valid stage key"),
        win_probability: 0.4,
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

fn ints(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}

fn words(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| format!("\"value-{i:03}\"")).collect();
    format!("[{}]", items.join(","))
}

/// The largest of `shape(1)`, `shape(2)`, … whose estimated cost is within the per-criterion
/// limit, so that the case measures a criterion at the limit whatever its value.
fn at_the_limit(shape: impl Fn(usize) -> String) -> String {
    let cost = |n| criteria::compile_stored(&shape(n)).map_or(u64::MAX, |e| e.cost());
    let mut n = 1;
    while n < 4000 && cost(n + 1) <= MAX_CRITERION_COST {
        n += 1;
    }
    shape(n)
}

/// Realistic criteria, then shapes sized to land at the per-criterion limit.
fn cases() -> Vec<(&'static str, String)> {
    vec![
        ("amount_positive", "lead.amount.value > 0.0".into()),
        (
            "contact_known",
            "lead.contact_name != \"\" || lead.contact_email != \"\"".into(),
        ),
        ("label_lookup", "lead.labels.region == \"emea\"".into()),
        (
            "labels_exists",
            "lead.labels.exists(k, k.startsWith(\"tier\") && lead.labels[k] == \"gold\")".into(),
        ),
        ("in_three_dozen", format!("lead.source in {}", words(36))),
        (
            "nested_all",
            at_the_limit(|n| format!("{}.all(x, {}.all(y, x != y || x >= 0))", ints(n), ints(n))),
        ),
        (
            "triple_all",
            at_the_limit(|n| {
                format!(
                    "{}.all(x, {}.all(y, {}.all(z, x + y + z >= 0)))",
                    ints(n),
                    ints(n),
                    ints(n)
                )
            }),
        ),
        (
            "map_of_lists",
            at_the_limit(|n| format!("{}.map(x, {}).size() > 0", ints(n), ints(n))),
        ),
        (
            "text_scans",
            at_the_limit(|n| format!("{}.all(x, !lead.lost_reason.contains(\"zz\"))", ints(n))),
        ),
        (
            "text_equality",
            at_the_limit(|n| format!("{}.all(x, lead.lost_reason != lead.title)", ints(n))),
        ),
        (
            "regex",
            at_the_limit(|n| format!("{}.all(x, !lead.title.matches(\"^t+x$\"))", ints(n))),
        ),
        (
            "regex_repeated",
            at_the_limit(|n| {
                format!(
                    "{}.all(x, !lead.title.matches(\"^(ab|cd){{20}}x$\"))",
                    ints(n)
                )
            }),
        ),
        (
            "membership",
            at_the_limit(|n| format!("{}.all(x, !(lead.title in {}))", ints(n), words(60))),
        ),
    ]
}

fn evaluation(c: &mut Criterion) {
    let lead = full_lead();
    let activation = Activation::new(&lead);
    let mut group = c.benchmark_group("criteria");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    eprintln!("limits: {MAX_CRITERION_COST} per criterion, {MAX_STAGE_COST} per stage");
    for (name, source) in cases() {
        let expr = criteria::compile_stored(&source).expect("the case compiles");
        eprintln!("{name}: estimated cost {}", expr.cost());
        group.bench_with_input(BenchmarkId::new("evaluate", name), &expr, |b, expr| {
            b.iter(|| black_box(activation.evaluate(black_box(expr))))
        });
    }
    group.bench_function("bind_lead", |b| {
        b.iter(|| black_box(Activation::new(black_box(&lead))))
    });
    let pipeline = policy::compile(default_pipeline()).expect("the default pipeline compiles");
    let negotiation = StageKey::parse("negotiation").expect("a valid stage key");
    let proposal_lead = Lead {
        stage: StageKey::parse("proposal").expect("a valid stage key"),
        ..lead.clone()
    };
    group.bench_function("default_pipeline_check_move", |b| {
        b.iter(|| black_box(pipeline.check_move(black_box(&proposal_lead), &negotiation)))
    });
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
