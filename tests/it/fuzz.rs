//! Property tests over untrusted input: whatever a client sends, nothing panics and nothing is
//! answered with INTERNAL or UNKNOWN.
//!
//! - criteria expressions (`domain::criteria::compile`) from arbitrary and CEL-like strings;
//! - the protobuf decoding paths: arbitrary bytes decoded as every request type, then converted;
//! - request validation: arbitrary leads and pipelines through the conversion functions;
//! - the same requests through a live server (SQLite, and PostgreSQL when configured), with
//!   fewer cases because each is a round trip.
//!
//! The filter parser and page tokens have property tests of their own, next to their code
//! (`crates/leadpipe-domain/src/filter.rs`, `crates/leadpipe-domain/src/listing.rs`). Cases default to 256 (`PROPTEST_CASES`
//! overrides); the live-server properties run a quarter of that, at least 16.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use leadpipe::api::convert::{lead_fields_from_proto, pipeline_definition_from_proto};
use leadpipe::domain::Violations;
use leadpipe::domain::criteria;
use leadpipe::grpc::pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use tonic::Code;

// ---- strategies ------------------------------------------------------------------------

/// Strings a client might send: empty, identifiers, printable, any Unicode, and long ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z_][a-z0-9_-]{0,15}",
        "[ -~]{0,40}",
        any::<String>(),
        "\\PC{0,20}",
        "[a-zA-Z ]{150,600}",
        Just("  ".into()),
        Just("\u{0}\n\t".into()),
    ]
}

fn stage_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("lead_generation".to_string()),
        Just("qualification".to_string()),
        Just("proposal".to_string()),
        Just("closed_won".to_string()),
        Just("closed_lost".to_string()),
        text(),
    ]
}

fn money() -> impl Strategy<Value = Option<pb::Money>> {
    proptest::option::of(
        (
            prop_oneof![
                Just("EUR".to_string()),
                Just("USD".to_string()),
                "[A-Z]{3}",
                text()
            ],
            prop_oneof![any::<i64>(), -1_000_000i64..1_000_000],
            prop_oneof![any::<i32>(), -999_999_999i32..=999_999_999],
        )
            .prop_map(|(currency_code, units, nanos)| pb::Money {
                currency_code,
                units,
                nanos,
            }),
    )
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    proptest::option::of(
        (
            prop_oneof![any::<i64>(), 0i64..4_000_000_000],
            prop_oneof![any::<i32>(), 0i32..1_000_000_000],
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn labels() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(text(), text(), 0..4)
}

fn lead() -> impl Strategy<Value = pb::Lead> {
    (
        (text(), text(), text(), text(), text(), text()),
        (text(), stage_key(), money(), text(), text()),
        (money(), timestamp(), timestamp(), labels(), text()),
        any::<bool>(),
    )
        .prop_map(
            |(
                (id, title, company, contact_name, contact_email, owner),
                (source, stage, amount, authority, need),
                (budget, timeline, expected_close_time, labels, lost_reason),
                bant,
            )| pb::Lead {
                id,
                title,
                company,
                contact_name,
                contact_email,
                owner,
                source,
                stage,
                amount,
                bant: bant.then_some(pb::Bant {
                    budget,
                    authority,
                    need,
                    timeline,
                }),
                expected_close_time,
                labels,
                lost_reason,
                ..Default::default()
            },
        )
}

/// CEL-like expressions over `lead`, well-formed or not, and arbitrary strings.
fn expression() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("lead.title"),
        Just("lead.amount.value"),
        Just("lead.bant.budget.value"),
        Just("lead.labels[\"x\"]"),
        Just("lead.has_bant_timeline"),
        Just("lead.expected_close_time"),
        Just("lead.nope"),
        Just("lead"),
        Just("size(lead.title)"),
        Just("1 / 0"),
        Just("\"a\""),
        Just("[1, 2]"),
        Just("{}"),
        Just("timestamp(\"x\")"),
    ];
    let op = prop_oneof![
        Just(" == "),
        Just(" != "),
        Just(" > "),
        Just(" && "),
        Just(" || "),
        Just(" + "),
        Just("."),
        Just(" in "),
        Just("("),
        Just(")"),
        Just(" ? "),
        Just(" : "),
        Just("!"),
        Just("-"),
    ];
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        proptest::collection::vec((field, op), 1..6).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(f, o)| format!("{f}{o}"))
                .collect::<String>()
        }),
        (0usize..200).prop_map(|depth| format!("{}true{}", "(".repeat(depth), ")".repeat(depth))),
        (0usize..200).prop_map(|n| "!".repeat(n) + "true"),
        (0usize..100).prop_map(|n| "[".repeat(n)),
    ]
}

fn pipeline() -> impl Strategy<Value = pb::Pipeline> {
    let criterion =
        (text(), text(), expression()).prop_map(|(id, message, expression)| pb::Criterion {
            id,
            message,
            expression,
        });
    let stage = (
        stage_key(),
        text(),
        0i32..6,
        prop_oneof![any::<f64>(), 0.0f64..=1.0],
        proptest::collection::vec(criterion, 0..3),
    )
        .prop_map(
            |(key, display_name, kind, probability, entry_criteria)| pb::Stage {
                key,
                display_name,
                kind,
                probability,
                entry_criteria,
                ..Default::default()
            },
        );
    (
        text(),
        text(),
        proptest::collection::vec(stage, 0..6),
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        text(),
    )
        .prop_map(
            |(id, display_name, stages, allow_skip, allow_backward, allow_reopen, etag)| {
                pb::Pipeline {
                    id,
                    display_name,
                    stages,
                    allow_skip,
                    allow_backward,
                    allow_reopen,
                    etag,
                    ..Default::default()
                }
            },
        )
}

fn field_mask() -> impl Strategy<Value = Option<prost_types::FieldMask>> {
    let path = prop_oneof![
        Just("title".to_string()),
        Just("bant".to_string()),
        Just("bant.budget".to_string()),
        Just("labels".to_string()),
        Just("amount".to_string()),
        Just("stage".to_string()),
        Just("stages".to_string()),
        text(),
    ];
    proptest::option::of(
        proptest::collection::vec(path, 0..4).prop_map(|paths| prost_types::FieldMask { paths }),
    )
}

// ---- pure properties -------------------------------------------------------------------

proptest! {
    #[test]
    fn criteria_compile_never_panics(source in expression()) {
        let _ = criteria::compile(&source);
    }

    #[test]
    fn lead_conversion_never_panics(lead in lead()) {
        let mut violations = Violations::default();
        let _ = lead_fields_from_proto(&lead, "lead", &mut violations);
        let _ = violations.into_result();
    }

    #[test]
    fn pipeline_conversion_never_panics(pipeline in pipeline()) {
        let mut violations = Violations::default();
        let _ = pipeline_definition_from_proto(&pipeline, &mut violations);
        let _ = violations.into_result();
    }

    /// Arbitrary bytes decoded as each request type: decoding fails cleanly or yields a message,
    /// and a message's conversion does not panic.
    #[test]
    fn arbitrary_bytes_decode_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_and_convert(&bytes);
    }

    /// Valid encodings with a few bytes flipped: gets deeper into the decoder than noise does.
    #[test]
    fn mutated_requests_decode_cleanly(
        lead in lead(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = pb::CreateLeadRequest { lead: Some(lead), request_id: "r".into() }
            .encode_to_vec();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value;
        }
        decode_and_convert(&bytes);
        let cut = cut.index(bytes.len() + 1);
        decode_and_convert(&bytes[..cut]);
    }
}

fn decode_and_convert(bytes: &[u8]) {
    let mut violations = Violations::default();
    if let Ok(request) = pb::CreateLeadRequest::decode(bytes)
        && let Some(lead) = &request.lead
    {
        let _ = lead_fields_from_proto(lead, "lead", &mut violations);
    }
    if let Ok(request) = pb::UpdateLeadRequest::decode(bytes)
        && let Some(lead) = &request.lead
    {
        let _ = lead_fields_from_proto(lead, "lead", &mut violations);
    }
    if let Ok(request) = pb::CreatePipelineRequest::decode(bytes)
        && let Some(pipeline) = &request.pipeline
    {
        let _ = pipeline_definition_from_proto(pipeline, &mut violations);
    }
    if let Ok(request) = pb::UpdatePipelineRequest::decode(bytes)
        && let Some(pipeline) = &request.pipeline
    {
        let _ = pipeline_definition_from_proto(pipeline, &mut violations);
    }
    if let Ok(request) = pb::ListLeadsRequest::decode(bytes) {
        let _ = leadpipe::domain::filter::parse_filter(&request.filter);
        let _ = leadpipe::domain::listing::parse_order_by(&request.order_by);
    }
    let _ = pb::MoveLeadRequest::decode(bytes);
    let _ = pb::GetLeadRequest::decode(bytes);
    let _ = pb::DeleteLeadRequest::decode(bytes);
    let _ = pb::CheckMoveRequest::decode(bytes);
    let _ = pb::ListStageChangesRequest::decode(bytes);
    let _ = pb::WatchStageChangesRequest::decode(bytes);
    let _ = pb::GetPipelineRequest::decode(bytes);
    let _ = pb::ListPipelinesRequest::decode(bytes);
    let _ = violations.into_result();
}

// ---- live-server properties ------------------------------------------------------------

#[derive(Debug, Clone)]
enum Call {
    Create(pb::Lead, String),
    Update(pb::Lead, Option<prost_types::FieldMask>),
    Move(String, String, String, String, String),
    Check(String, String),
    Get(String),
    Delete(String, String),
    List(String, String, i32, String),
    History(String, i32, String),
    Watch(Option<i64>, String, Vec<String>, String),
    CreatePipeline(pb::Pipeline),
    UpdatePipeline(pb::Pipeline, Option<prost_types::FieldMask>),
    GetPipeline(String),
    ListPipelines(i32, String),
}

/// Lead ids: mostly the id of a real lead (so that validation passes and deeper paths run),
/// sometimes garbage.
fn lead_id(real: String) -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(real), 1 => text(), 1 => Just("0190e5a0-0000-7000-8000-000000000000".to_string())]
}

fn call(real: String) -> impl Strategy<Value = Call> {
    let filter = prop_oneof![
        text(),
        Just("owner = \"sam\" AND amount >= 10".to_string()),
        "[a-z_.]{1,10} (=|!=|<|>=|:) (\"[a-z]{0,4}\"|[0-9.]{1,6}|\\*)",
        "[()a-z =\"<>!:*.-]{0,40}",
    ];
    let real_lead = |lead: pb::Lead, real: String| pb::Lead { id: real, ..lead };
    prop_oneof![
        (lead(), text()).prop_map(|(l, r)| Call::Create(l, r)),
        (lead(), lead_id(real.clone()), field_mask())
            .prop_map(move |(l, id, m)| Call::Update(real_lead(l, id), m)),
        (lead_id(real.clone()), stage_key(), text(), text(), text())
            .prop_map(|(id, s, e, r, n)| Call::Move(id, s, e, r, n)),
        (lead_id(real.clone()), stage_key()).prop_map(|(id, s)| Call::Check(id, s)),
        lead_id(real.clone()).prop_map(Call::Get),
        (text(), text()).prop_map(|(id, e)| Call::Delete(id, e)),
        (filter, text(), any::<i32>(), text()).prop_map(|(f, o, n, t)| Call::List(f, o, n, t)),
        (lead_id(real.clone()), any::<i32>(), text())
            .prop_map(|(id, n, t)| Call::History(id, n, t)),
        (
            proptest::option::of(prop_oneof![any::<i64>(), -2i64..5]),
            text(),
            proptest::collection::vec(stage_key(), 0..3),
            lead_id(real)
        )
            .prop_map(|(a, p, s, l)| Call::Watch(a, p, s, l)),
        pipeline().prop_map(Call::CreatePipeline),
        (pipeline(), field_mask()).prop_map(|(p, m)| Call::UpdatePipeline(p, m)),
        prop_oneof![Just("default".to_string()), text()].prop_map(Call::GetPipeline),
        (any::<i32>(), text()).prop_map(|(n, t)| Call::ListPipelines(n, t)),
    ]
}

async fn send(app: &TestApp, call: Call) -> Result<(), tonic::Status> {
    let mut leads = app.leads.clone();
    let mut pipelines = app.pipelines.clone();
    match call {
        Call::Create(lead, request_id) => leads
            .create_lead(pb::CreateLeadRequest {
                lead: Some(lead),
                request_id,
            })
            .await
            .map(drop),
        Call::Update(lead, update_mask) => leads
            .update_lead(pb::UpdateLeadRequest {
                lead: Some(lead),
                update_mask,
            })
            .await
            .map(drop),
        Call::Move(id, stage, etag, request_id, note) => leads
            .move_lead(pb::MoveLeadRequest {
                id,
                stage,
                etag,
                request_id,
                note,
            })
            .await
            .map(drop),
        Call::Check(id, stage) => leads
            .check_move(pb::CheckMoveRequest { id, stage })
            .await
            .map(drop),
        Call::Get(id) => leads
            .get_lead(pb::GetLeadRequest { as_of: None, id })
            .await
            .map(drop),
        Call::Delete(id, etag) => leads
            .delete_lead(pb::DeleteLeadRequest { id, etag })
            .await
            .map(drop),
        Call::List(filter, order_by, page_size, page_token) => leads
            .list_leads(pb::ListLeadsRequest {
                filter,
                order_by,
                page_size,
                page_token,
                as_of: None,
            })
            .await
            .map(drop),
        Call::History(lead_id, page_size, page_token) => leads
            .list_stage_changes(pb::ListStageChangesRequest {
                lead_id,
                page_size,
                page_token,
            })
            .await
            .map(drop),
        Call::Watch(after_sequence, pipeline_id, stages, lead_id) => {
            let mut stream = leads
                .watch_stage_changes(pb::WatchStageChangesRequest {
                    after_sequence,
                    pipeline_id,
                    stages,
                    lead_id,
                    ..Default::default()
                })
                .await?
                .into_inner();
            // A replay's first event, if any, arrives promptly; then the stream is dropped.
            match tokio::time::timeout(Duration::from_millis(20), stream.message()).await {
                Ok(Err(status)) => Err(status),
                _ => Ok(()),
            }
        }
        Call::CreatePipeline(pipeline) => pipelines
            .create_pipeline(pb::CreatePipelineRequest {
                pipeline: Some(pipeline),
            })
            .await
            .map(drop),
        Call::UpdatePipeline(pipeline, update_mask) => pipelines
            .update_pipeline(pb::UpdatePipelineRequest {
                pipeline: Some(pipeline),
                update_mask,
            })
            .await
            .map(drop),
        Call::GetPipeline(id) => pipelines
            .get_pipeline(pb::GetPipelineRequest { id })
            .await
            .map(drop),
        Call::ListPipelines(page_size, page_token) => pipelines
            .list_pipelines(pb::ListPipelinesRequest {
                page_size,
                page_token,
            })
            .await
            .map(drop),
    }
}

fn live_cases() -> u32 {
    (Config::default().cases / 4).max(16)
}

fn live_server_never_fails_internally(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(app) = runtime.block_on(spawn_app(backend)) else {
        return;
    };
    let real = runtime.block_on(create(&app, new_lead("the real lead"))).id;
    let mut runner = TestRunner::new(Config {
        cases: live_cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&call(real), |call| {
            let shown = format!("{call:?}");
            let result = runtime.block_on(send(&app, call));
            if let Err(status) = result {
                prop_assert!(
                    !matches!(
                        status.code(),
                        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented
                    ),
                    "{shown} gave {status:?}"
                );
            }
            Ok(())
        })
        .unwrap();
    // Still serving.
    runtime.block_on(async {
        app.leads
            .clone()
            .list_leads(pb::ListLeadsRequest::default())
            .await
            .expect("the server still answers");
    });
    runtime.block_on(app.stop());
}

#[test]
fn sqlite_live_server_never_fails_internally() {
    live_server_never_fails_internally(Backend::Sqlite);
}

#[test]
fn postgres_live_server_never_fails_internally() {
    live_server_never_fails_internally(Backend::Postgres);
}
