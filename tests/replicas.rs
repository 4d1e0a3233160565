//! Two leadpipe servers sharing one PostgreSQL: a subscriber on one sees moves made through the
//! other promptly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use leadpipe::grpc::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_on_one_replica_sees_moves_through_the_other() {
    let Some((url, _)) = fresh_database(Backend::Postgres).await else {
        return;
    };
    let replica_a = spawn_app_on(Backend::Postgres, url.clone(), None).await;
    let replica_b = spawn_app_on(Backend::Postgres, url, None).await;

    let mut stream = replica_a
        .leads
        .clone()
        .watch_stage_changes(pb::WatchStageChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let lead = create(
        &replica_b,
        pb::Lead {
            contact_email: "ops@example.com".into(),
            ..new_lead("cross-replica")
        },
    )
    .await;
    let created = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("creation event arrives")
        .unwrap()
        .unwrap();
    assert_eq!(created.lead_id, lead.id);

    let mut latencies = Vec::new();
    for i in 0..20 {
        let stage = if i % 2 == 0 {
            "qualification"
        } else {
            "lead_generation"
        };
        let started = Instant::now();
        move_to(&replica_b, &lead.id, stage).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("event arrives")
            .unwrap()
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(event.to_stage, stage);
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().unwrap();
    eprintln!("cross-replica move-to-delivery latency: median {median:?}, max {worst:?}");
    assert!(worst < Duration::from_millis(900), "max latency {worst:?}");
}
