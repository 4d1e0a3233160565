//! Builds the application and serves it over gRPC.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::app::catalog::PipelineCatalog;
use crate::app::leads::LeadService;
use crate::app::pipelines::PipelineService;
use crate::grpc::lead_service::LeadApi;
use crate::grpc::pb;
use crate::grpc::pipeline_service::PipelineApi;
use crate::store::{Store, StoreConfig, StoreError, idempotency};

/// How long idempotency keys are remembered.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub leads: LeadService,
    pub pipelines: PipelineService,
}

impl App {
    /// Connects, migrates and wires the services.
    pub async fn build(config: &StoreConfig) -> Result<Self, StoreError> {
        let store = Store::connect(config).await?;
        store.migrate().await?;
        let catalog = Arc::new(PipelineCatalog::default());
        Ok(Self {
            leads: LeadService::new(store.clone(), catalog.clone()),
            pipelines: PipelineService::new(store.clone(), catalog),
            store,
        })
    }

    /// Serves until `shutdown` completes, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::lead_service_server::LeadServiceServer<LeadApi>>()
            .await;
        health
            .set_serving::<pb::pipeline_service_server::PipelineServiceServer<PipelineApi>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let pruner = tokio::spawn(prune_idempotency_keys(self.store.clone()));

        tracing::info!(address = %listener.local_addr()?, "leadpipe serving");
        let result = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(pb::lead_service_server::LeadServiceServer::new(LeadApi {
                leads: self.leads,
            }))
            .add_service(pb::pipeline_service_server::PipelineServiceServer::new(
                PipelineApi {
                    pipelines: self.pipelines,
                },
            ))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        pruner.abort();
        self.store.close().await;
        tracing::info!("leadpipe stopped");
        Ok(result?)
    }
}

async fn prune_idempotency_keys(store: Store) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        interval.tick().await;
        let cutoff =
            crate::store::to_micros(chrono::Utc::now()) - IDEMPOTENCY_RETENTION.as_micros() as i64;
        match idempotency::prune(store.writer(), cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "could not prune idempotency keys"),
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
