//! Two leadpipe servers sharing one PostgreSQL: a subscriber on one sees moves made through the
//! other, woken by the other's NOTIFY rather than by polling.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use leadpipe::grpc::pb;

/// Far longer than the test: an event that arrives was woken by the relay, not by a poll.
const NO_POLLING: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_on_one_replica_sees_moves_through_the_other() {
    let Some((url, _database)) = fresh_database(Backend::Postgres).await else {
        return;
    };
    let replica = || {
        let mut settings = settings_for(&url);
        settings.event_poll_interval = NO_POLLING;
        spawn_app_with(Backend::Postgres, settings, None)
    };
    let replica_a = replica().await;
    let replica_b = replica().await;

    let mut stream = replica_a
        .leads
        .clone()
        .watch_stage_changes(pb::WatchStageChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A's LISTEN connection opens in the background, and a notification sent before it is
    // lost; each further commit on B notifies again and A then reads everything it missed.
    let mut created = Vec::new();
    let first = loop {
        let lead = pb::Lead {
            contact_email: "ops@example.com".into(),
            ..new_lead(&format!("cross-replica {}", created.len()))
        };
        let lead = create(&replica_b, lead).await;
        created.push(lead.id);
        if let Ok(event) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            break event.expect("stream healthy").expect("stream open");
        }
        assert!(
            created.len() < 20,
            "replica A never heard replica B's commits"
        );
    };
    let mut arrived = vec![first.lead_id];
    while arrived.len() < created.len() {
        arrived.push(next_event(&mut stream).await.lead_id);
    }
    assert_eq!(arrived, created, "every creation, once, in commit order");

    let lead = created.last().unwrap();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let stage = if i % 2 == 0 {
            "qualification"
        } else {
            "lead_generation"
        };
        let started = Instant::now();
        move_to(&replica_b, lead, stage).await.unwrap();
        let event = next_event(&mut stream).await;
        latencies.push(started.elapsed());
        assert_eq!((&event.lead_id, event.to_stage.as_str()), (lead, stage));
    }
    latencies.sort();
    eprintln!(
        "cross-replica move-to-delivery latency (informational): median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
}
