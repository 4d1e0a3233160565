//! What the container image and the Kubernetes example rely on: `leadpipe health` (the image's
//! HEALTHCHECK) and the `liveness` health service (the liveness probe), which stays SERVING
//! while the database is down so that an outage does not restart every replica.

use crate::common;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use leadpipe::server::{App, LIVENESS_SERVICE};
use tokio::sync::oneshot;

async fn health(addr: SocketAddr, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_leadpipe"));
    command
        .args(["health", "--listen", &addr.to_string()])
        .args(args);
    tokio::task::spawn_blocking(move || command.output().expect("run leadpipe health"))
        .await
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_passes_on_a_serving_server_and_fails_otherwise() {
    let app = common::spawn_app(common::Backend::Sqlite).await.unwrap();
    assert!(health(app.addr, &[]).await.status.success());
    assert!(
        health(app.addr, &["--service", "leadpipe.v1.LeadService"])
            .await
            .status
            .success()
    );
    assert!(
        health(app.addr, &["--service", LIVENESS_SERVICE])
            .await
            .status
            .success()
    );
    let unknown = health(app.addr, &["--service", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("service not registered"),
        "{}",
        stderr(&unknown)
    );
    let addr = app.addr;
    app.stop().await;
    let gone = health(addr, &["--timeout", "1s"]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).starts_with("unhealthy: cannot connect"),
        "{}",
        stderr(&gone)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_stays_serving_while_the_database_is_unreachable() {
    // Nothing listens on port 1: the database refuses every connection.
    let mut settings = common::settings_for("postgres://leadpipe@127.0.0.1:1/leadpipe");
    settings.store.acquire_timeout = Duration::from_millis(200);
    let app = App::start(&settings)
        .await
        .expect("start without a database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    common::connect(addr).await;

    let readiness = health(addr, &[]).await;
    assert_eq!(readiness.status.code(), Some(1));
    assert!(
        stderr(&readiness).contains("NOT_SERVING"),
        "{}",
        stderr(&readiness)
    );
    let liveness = health(addr, &["--service", LIVENESS_SERVICE]).await;
    assert!(liveness.status.success(), "{}", stderr(&liveness));

    let _ = stop.send(());
    let _ = server.await;
}

#[test]
fn the_deployment_files_use_what_the_binary_provides() {
    let manifest = include_str!("../../deploy/kubernetes/leadpipe.yaml");
    assert!(manifest.contains(&format!("service: {LIVENESS_SERVICE}")));
    assert!(manifest.contains(r#"args: ["migrate"]"#));
    let dockerfile = include_str!("../../Dockerfile");
    assert!(dockerfile.contains(r#"CMD ["leadpipe", "health"]"#));
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM"));
}
