//! Bulk data in and out of a tenant from the command line: `leadpipe import`, `export` and
//! `demo`. Like `migrate` and `keys` they work on the database directly, so they need neither
//! a running server nor an API key, and are not bound by the server's message size, deadline or
//! rate limits. They go through the same use cases as the API: imports run the code of
//! `ImportLeads` (validation, batching, retraining and rescoring), exports page like
//! `ListLeads`.

pub mod csv;
pub mod demo;
pub mod export;
pub mod import;
pub mod mapping;
pub mod pipelines;
pub mod presets;
pub mod source;
pub mod synthetic;

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::app::{RequestContext, Services};
use crate::domain::ids::TenantId;
use crate::store::StoreConfig;

/// Connects to and migrates the database, and wires the use cases.
pub(crate) async fn open(config: &StoreConfig) -> Result<Services, String> {
    Services::open(config)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))
}

/// The caller recorded as the actor of what a command writes, e.g. `cli:import`.
pub(crate) fn context(tenant: &TenantId, command: &str) -> RequestContext {
    RequestContext {
        tenant: tenant.clone(),
        actor: format!("cli:{command}"),
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal (pipes, CI, tests). `unit`
/// is `bytes` or a noun such as `leads`.
pub(crate) fn progress_bar(len: u64, verb: &str, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = match unit {
        "bytes" => format!(
            "{verb} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} ~{{eta}} left {{msg}}"
        ),
        // The time left is shown once the rate is known: an estimate from the first rows,
        // read while the database is still being opened, misleads.
        _ => format!("{verb} {{bar:40}} {{human_pos}}/{{human_len}} {unit} {{per_sec}} {{msg}}"),
    };
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}
