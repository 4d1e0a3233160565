//! `leadpipe keys create|list|revoke`. The created key goes alone to stdout (so that
//! `KEY=$(leadpipe keys create …)` works); explanations go to stderr.

use crate::app::api_keys::{KeyInfo, KeyService, Role};
use crate::app::{AppError, Clock};
use crate::config::KeysCommand;
use crate::store::{Store, StoreConfig};

/// Runs one keys command against the database (migrating it first). Returns the message to
/// print on failure.
pub async fn run(config: &StoreConfig, command: KeysCommand) -> Result<(), String> {
    let store = Store::connect(config)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let result = async {
        store
            .migrate()
            .await
            .map_err(|e| format!("cannot migrate the database: {e}"))?;
        execute(KeyService::new(store.clone(), Clock::system()), command)
            .await
            .map_err(describe)
    }
    .await;
    store.close().await;
    result
}

async fn execute(keys: KeyService, command: KeysCommand) -> Result<(), AppError> {
    match command {
        KeysCommand::Create {
            tenant,
            role,
            label,
        } => {
            let role = Role::from(role);
            let created = keys.create(&tenant, role, &label).await?;
            eprintln!(
                "Created the {role} key {} for tenant {tenant}. Store it now: it is not shown again.",
                created.info.name
            );
            eprintln!("Clients send it as the metadata `authorization: Bearer <key>`.");
            println!("{}", created.key);
        }
        KeysCommand::List { tenant } => {
            let listed = keys.list(tenant.as_ref()).await?;
            print_table(&listed);
        }
        KeysCommand::Revoke { id } => {
            let key = keys.revoke(&id).await?;
            let when = key
                .revoke_time
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            println!(
                "revoked {} (tenant {}) at {when}",
                key.name, key.name.tenant
            );
        }
    }
    Ok(())
}

fn print_table(keys: &[KeyInfo]) {
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let rows: Vec<[String; 6]> = keys
        .iter()
        .map(|k| {
            [
                k.name.to_string(),
                k.name.tenant.to_string(),
                k.role.to_string(),
                time(k.create_time),
                k.revoke_time.map(time).unwrap_or_else(|| "-".into()),
                k.label.clone(),
            ]
        })
        .collect();
    let header = ["KEY", "TENANT", "ROLE", "CREATED", "REVOKED", "LABEL"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    if rows.is_empty() {
        eprintln!("no API keys");
    }
}

fn describe(error: AppError) -> String {
    match error {
        AppError::InvalidArgument(violations) => violations
            .into_iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}
