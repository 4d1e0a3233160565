//! `leadpipe import FILE.csv`: each row is read as an `ImportLeadsRequest` message would be and
//! runs through the use case behind `LeadService.ImportLeads`. Bad rows are reported with their
//! line and column; the good rows still go in.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::csv::{HistorySource, LeadRow, check_header, column_of, row_to_message};
use crate::app::AppError;
use crate::app::import::ImportRow;
use crate::domain::ids::{PipelineId, TenantId};
use crate::store::StoreConfig;

/// A refused row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The line the row starts on; the header is line 1.
    pub line: u64,
    pub column: String,
    pub reason: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub imported: u64,
    pub already_imported: u64,
    /// Rows refused; `errors` lists them in line order, one entry per problem.
    pub refused: u64,
    pub errors: Vec<RowError>,
}

impl ImportReport {
    /// The summary line printed after the import.
    pub fn summary(&self) -> String {
        format!(
            "{} rows: {} imported, {} already imported, {} refused",
            self.rows, self.imported, self.already_imported, self.refused
        )
    }
}

/// What the reading thread learned about the rows it sent, by message index.
struct Sent {
    line: u64,
    history: HistorySource,
}

struct Reading {
    rows: u64,
    sent: Vec<Sent>,
    errors: Vec<RowError>,
    refused: u64,
}

impl Reading {
    /// A row the CSV reader itself could not parse.
    fn refuse_unparsable(&mut self, line: u64, error: &::csv::Error) {
        self.refused += 1;
        self.errors.push(RowError {
            line,
            column: String::new(),
            reason: csv_reason(error),
        });
    }
}

/// Imports `path` (`-`: standard input) into `tenant`. Fails only when the import cannot run at
/// all (unreadable file, bad header, database down); refused rows are in the report.
pub async fn run(
    config: &StoreConfig,
    tenant: &TenantId,
    path: &Path,
) -> Result<ImportReport, String> {
    let (input, size): (Box<dyn Read + Send>, u64) = if path.as_os_str() == "-" {
        (Box::new(std::io::stdin()), 0)
    } else {
        let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(BufReader::new(file)), size)
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|e| format!("line 1: cannot read the header: {e}"))?
        .clone();
    check_header(&header).map_err(|e| format!("line 1: {e}"))?;

    let app = super::open(config).await?;
    let ctx = super::context(tenant, "import");
    let (tx, rx) = mpsc::channel::<Result<ImportRow, AppError>>(1024);
    let importing = {
        let (import, forecasts, ctx) = (app.import.clone(), app.forecasts.clone(), ctx.clone());
        tokio::spawn(async move {
            import
                .import_and_rescore(&forecasts, &ctx, ReceiverStream::new(rx))
                .await
        })
    };
    let progress = super::progress_bar(size, "importing", "bytes");
    let reading = {
        let (import, ctx, progress) = (app.import.clone(), ctx.clone(), progress.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            // The first stage of each pipeline named in the file, looked up once.
            let mut first_stages: HashMap<String, Option<String>> = HashMap::new();
            let mut first_stage = |id: &str| {
                first_stages
                    .entry(id.to_owned())
                    .or_insert_with(|| {
                        let id = if id.trim().is_empty() {
                            PipelineId::default_pipeline()
                        } else {
                            PipelineId::parse(id.trim()).ok()?
                        };
                        let pipeline = runtime.block_on(import.pipeline(&ctx, &id)).ok()??;
                        Some(pipeline.definition().first_stage().key.as_str().to_owned())
                    })
                    .clone()
            };
            read_rows(&mut reader, &header, &tx, &mut first_stage, &progress)
        })
    };
    let reading = reading
        .await
        .map_err(|e| format!("the CSV reader failed: {e}"))?;
    progress.set_message("(retraining and rescoring open leads)");
    let response = importing
        .await
        .map_err(|e| format!("the import failed: {e}"))?
        .map_err(|error| format!("the import failed: {error}"));
    progress.finish_and_clear();
    app.store.close().await;
    let (reading, response) = (reading?, response?);

    let mut report = ImportReport {
        rows: reading.rows,
        imported: response.imported as u64,
        already_imported: response.already_imported as u64,
        refused: reading.refused + response.failed as u64,
        errors: reading.errors,
    };
    for error in &response.errors {
        let Some(sent) = usize::try_from(error.index)
            .ok()
            .and_then(|i| reading.sent.get(i))
        else {
            continue;
        };
        report.errors.push(RowError {
            line: sent.line,
            column: column_of(&error.field, sent.history),
            reason: error.reason.clone(),
        });
    }
    report.errors.sort_by_key(|e| e.line);
    Ok(report)
}

/// Reads every row, sending the good ones to the import. Returns an error for a failure that
/// ends the file (an I/O error), after the rows before it were sent.
fn read_rows(
    reader: &mut ::csv::Reader<Box<dyn Read + Send>>,
    header: &::csv::StringRecord,
    tx: &mpsc::Sender<Result<ImportRow, AppError>>,
    first_stage: &mut dyn FnMut(&str) -> Option<String>,
    progress: &indicatif::ProgressBar,
) -> Result<Reading, String> {
    let mut reading = Reading {
        rows: 0,
        sent: Vec::new(),
        errors: Vec::new(),
        refused: 0,
    };
    let mut record = ::csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                let line = error.position().map_or(line, |p| p.line());
                if let ::csv::ErrorKind::Io(e) = error.kind() {
                    return Err(format!("line {line}: cannot read the file: {e}"));
                }
                reading.rows += 1;
                reading.refuse_unparsable(line, &error);
                continue;
            }
        }
        progress.set_position(reader.position().byte());
        // A blank line between rows is not a row.
        if record.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        reading.rows += 1;
        let line = record.position().map_or(line, |p| p.line());
        let row: LeadRow = match record.deserialize(Some(header)) {
            Ok(row) => row,
            Err(error) => {
                reading.refuse_unparsable(line, &error);
                continue;
            }
        };
        match row_to_message(&row, first_stage) {
            Ok(converted) => {
                reading.sent.push(Sent {
                    line,
                    history: converted.history,
                });
                let row = ImportRow::from(converted.message);
                if tx.blocking_send(Ok(row)).is_err() {
                    // The import ended early; its error is reported by the caller.
                    break;
                }
            }
            Err(errors) => {
                reading.refused += 1;
                reading.errors.extend(errors.into_iter().map(|e| RowError {
                    line,
                    column: e.column,
                    reason: e.reason,
                }));
            }
        }
    }
    Ok(reading)
}

fn csv_reason(error: &::csv::Error) -> String {
    match error.kind() {
        ::csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("has {len} fields, but the header has {expected_len}"),
        ::csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".into(),
        _ => error.to_string(),
    }
}

/// `leadpipe import`: prints refused rows on stderr and the summary on stdout. The exit code is
/// 0 when every row is in (imported now or before), 2 when some rows were refused (the others
/// are in), and 1 when the import could not run.
pub async fn main(config: &StoreConfig, tenant: &TenantId, path: &Path) -> i32 {
    match run(config, tenant, path).await {
        Ok(report) => {
            let name = if path.as_os_str() == "-" {
                "stdin".into()
            } else {
                path.display().to_string()
            };
            for error in &report.errors {
                if error.column.is_empty() {
                    eprintln!("{name}:{}: {}", error.line, error.reason);
                } else {
                    eprintln!("{name}:{}: {}: {}", error.line, error.column, error.reason);
                }
            }
            let listed: std::collections::HashSet<u64> =
                report.errors.iter().map(|e| e.line).collect();
            if (listed.len() as u64) < report.refused {
                eprintln!(
                    "{name}: {} more refused rows are not listed",
                    report.refused - listed.len() as u64
                );
            }
            println!("{}", report.summary());
            if report.refused > 0 { 2 } else { 0 }
        }
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}
