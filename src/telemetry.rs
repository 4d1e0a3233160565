//! Logs through `tracing`, filtered by `RUST_LOG` (default `info`), and, when configured,
//! export of each call's span to an OpenTelemetry collector over OTLP/gRPC.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The standard variables that turn the export on without `--otlp-endpoint`.
const OTEL_ENDPOINT_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Keeps the trace export running; `shutdown` flushes it.
#[must_use = "dropping it without shutdown loses the spans not yet exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered, then stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // Blocks until the batch is sent; the export itself runs on the runtime's other threads.
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = result {
            eprintln!("warning: could not flush the trace export: {error}");
        }
    }
}

/// Starts logging. With `otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), also exports spans over OTLP/gRPC: the other standard
/// `OTEL_*` variables (headers, timeout, service name, resource attributes, sampler) apply.
/// Must be called inside the Tokio runtime, which the exporter uses.
pub fn init(
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, opentelemetry_otlp::ExporterBuildError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_filter(filter);
    let endpoint_from_env = OTEL_ENDPOINT_VARS
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    let provider = match otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(Some(endpoint))?),
        None if endpoint_from_env => Some(tracer_provider(None)?),
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("leadpipe"))
            // leadpipe's own spans (each call's, at DEBUG), not its dependencies' internals.
            .with_filter(Targets::new().with_target("leadpipe", tracing::Level::DEBUG))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(endpoint) = otlp_endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP/gRPC");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC to the endpoint OTEL_* variables name");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let mut exporter = SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win when set.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("leadpipe");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(resource.build())
        .build())
}
