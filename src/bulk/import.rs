//! `leadpipe import FILE.csv`: each row is read as an `ImportLeadsRequest` message would be and
//! runs through the use case behind `LeadService.ImportLeads`. Bad rows are reported with their
//! line and column; the good rows still go in.
//!
//! The whole file is read and checked before anything is written: its encoding, delimiter,
//! quotes, header and the pipelines its rows name. A file that fails these checks is refused
//! once, with the reason, and nothing of it is imported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::csv::{HistorySource, ReadRules, column_of, row_to_message};
use super::mapping::{Layout, Mapping};
use super::pipelines::PipelineSpec;
use super::presets::{Preset, SourceHistory};
use super::source::{SourceText, parse_delimiter};
use crate::app::AppError;
use crate::app::import::ImportRow;
use crate::domain::ids::{PipelineId, TenantId};
use crate::domain::pipeline::PipelineDefinition;
use crate::store::StoreConfig;

/// Refused rows listed on stderr per reason; the rest are counted.
const LISTED_PER_REASON: usize = 3;

/// What `leadpipe import` does besides reading the file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub mapping: Mapping,
    /// Check every row and write nothing.
    pub dry_run: bool,
    /// Bring leads imported before up to date with their rows (`update_existing`).
    pub update: bool,
    /// Histories from files of their own, by external id, for rows without one.
    pub histories: HashMap<String, SourceHistory>,
    /// Pipelines to create first when the tenant lacks them (a preset's).
    pub pipelines: Vec<PipelineSpec>,
}

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
    /// Rows already in the tenant, as they are stored, and repeats of an earlier row.
    pub unchanged: u64,
    /// Rows imported before whose stored lead now differs from them (without `update`).
    pub differing: u64,
    /// Rows that brought a lead imported before up to date (with `update`).
    pub updated: u64,
    pub update: bool,
    /// Rows refused; `errors` lists them in line order, one entry per problem.
    pub refused: u64,
    pub errors: Vec<RowError>,
    pub dry_run: bool,
}

impl ImportReport {
    /// The summary printed after the import: the counts, then the refused rows by reason.
    pub fn summary(&self) -> String {
        let verb = if self.dry_run {
            "would be imported"
        } else {
            "imported"
        };
        let mut text = if self.update {
            let updated = if self.dry_run {
                "would be updated"
            } else {
                "updated"
            };
            format!(
                "{} rows read: {} {verb}, {} {updated}, {} unchanged, {} refused",
                self.rows, self.imported, self.updated, self.unchanged, self.refused
            )
        } else {
            format!(
                "{} rows read: {} {verb}, {} unchanged, {} changed since imported, {} refused",
                self.rows, self.imported, self.unchanged, self.differing, self.refused
            )
        };
        if self.differing > 0 {
            text.push_str(&format!(
                "\n{} rows differ from the lead imported before with their external_id and \
                 were left as they are; run again with --update to apply them as revisions",
                self.differing
            ));
        }
        let reasons = self.refused_by_reason();
        if !reasons.is_empty() {
            text.push_str("\nrefused by reason:");
            for (reason, count) in reasons {
                text.push_str(&format!("\n  {count:>6}  {reason}"));
            }
        }
        if self.dry_run {
            text.push_str("\ndry run: nothing was written");
        }
        text
    }

    /// Each refused row counted once, under its first problem, most frequent first.
    pub fn refused_by_reason(&self) -> Vec<(String, u64)> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen = HashSet::new();
        for error in &self.errors {
            if seen.insert(error.line) {
                *counts.entry(error.kind()).or_default() += 1;
            }
        }
        let listed: u64 = counts.values().sum();
        if listed < self.refused {
            counts.insert("(not listed)".into(), self.refused - listed);
        }
        let mut reasons: Vec<_> = counts.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        reasons
    }
}

impl RowError {
    /// The problem without the value it quotes (the first quoted text), to group rows refused
    /// for the same reason: `amount: "…" is not a non-negative decimal number`.
    pub fn kind(&self) -> String {
        let mut text = String::new();
        let mut state = 0; // 0: before the quote, 1: in it, 2: after it
        let mut escaped = false;
        for c in self.reason.chars() {
            match state {
                1 => match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        state = 2;
                        text.push_str("…\"");
                    }
                    _ => escaped = false,
                },
                _ => {
                    text.push(c);
                    if c == '"' && state == 0 {
                        state = 1;
                    }
                }
            }
        }
        if self.column.is_empty() {
            text
        } else {
            format!("{}: {text}", self.column)
        }
    }
}

/// What the reading thread learned about the rows it sent, by message index.
struct Sent {
    line: u64,
    history: HistorySource,
}

#[derive(Default)]
struct Reading {
    rows: u64,
    sent: Vec<Sent>,
    errors: Vec<RowError>,
    refused: u64,
    /// Rows that repeat an earlier row of the file exactly.
    repeated: u64,
}

impl Reading {
    fn refuse(&mut self, line: u64, errors: impl IntoIterator<Item = (String, String)>) {
        self.refused += 1;
        self.errors
            .extend(errors.into_iter().map(|(column, reason)| RowError {
                line,
                column,
                reason,
            }));
    }
}

/// A file read and checked, ready to import.
struct Prepared {
    source: SourceText,
    delimiter: u8,
    layout: Layout,
    rows: u64,
}

fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        bytes = std::fs::read(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    }
    Ok(bytes)
}

fn reader(text: &str, delimiter: u8) -> ::csv::Reader<&[u8]> {
    ::csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes())
}

/// Decodes and checks the file, resolves its header, and counts its rows.
fn prepare(bytes: &[u8], mapping: &Mapping) -> Result<Prepared, String> {
    let mut source = SourceText::decode(bytes, mapping.encoding.as_deref())?;
    if mapping.footer_after_blank_line {
        source.cut_at_blank_line();
    }
    let delimiter = match &mapping.delimiter {
        Some(delimiter) => parse_delimiter(delimiter)?,
        None => source.sniff_delimiter(),
    };
    source.check_quotes(delimiter)?;
    let mut csv = reader(&source.text, delimiter);
    let header = csv
        .headers()
        .map_err(|e| format!("line 1: cannot read the header: {e}"))?
        .clone();
    let layout = mapping
        .layout(&header)
        .map_err(|e| format!("line 1: {e}"))?;
    let mut record = ::csv::StringRecord::new();
    let mut rows = 0;
    while let Ok(more) = csv.read_record(&mut record) {
        if !more {
            break;
        }
        rows += 1;
    }
    Ok(Prepared {
        source,
        delimiter,
        layout,
        rows,
    })
}

/// Imports `path` (`-`: standard input) into `tenant`. Fails only when the import cannot run at
/// all (unreadable file, bad header, a missing pipeline, database down); refused rows are in
/// the report.
pub async fn run(
    config: &StoreConfig,
    tenant: &TenantId,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, String> {
    let mapping = &options.mapping;
    mapping.check()?;
    let times = mapping.time_format()?;
    let decimal = mapping.decimal()?;
    let bytes = read_input(path)?;
    let prepared = prepare(&bytes, mapping)?;
    drop(bytes);

    let app = super::open(config).await?;
    let ctx = super::context(tenant, "import");
    let result = async {
        for spec in &options.pipelines {
            if !options.dry_run {
                super::pipelines::ensure(&app, &ctx, spec).await?;
            }
        }
        let pipelines = pipelines_of(&app, &ctx, &prepared, mapping, &options.pipelines).await?;
        let (tx, rx) = mpsc::channel::<Result<ImportRow, AppError>>(1024);
        let importing = {
            let (import, forecasts, ctx) = (app.import.clone(), app.forecasts.clone(), ctx.clone());
            let dry_run = options.dry_run;
            tokio::spawn(async move {
                let rows = ReceiverStream::new(rx);
                if dry_run {
                    import.dry_run(&ctx, rows).await
                } else {
                    import.import_and_rescore(&forecasts, &ctx, rows).await
                }
            })
        };
        let progress = super::progress_bar(prepared.rows, "importing", "rows");
        let now = app.clock.now();
        let reading = {
            let (mapping, progress) = (mapping.clone(), progress.clone());
            let histories = options.histories.clone();
            let update = options.update;
            tokio::task::spawn_blocking(move || {
                let rules = ReadRules {
                    times: &times,
                    decimal,
                    mapping: &mapping,
                    now,
                };
                read_rows(
                    &prepared, &rules, &pipelines, &histories, update, &tx, &progress,
                )
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
        Ok::<_, String>((reading, response))
    }
    .await;
    app.store.close().await;
    let (reading, response) = result?;
    let (reading, response) = (reading?, response?);

    let mut report = ImportReport {
        rows: reading.rows,
        imported: response.imported as u64,
        unchanged: (response.already_imported - response.differing) as u64 + reading.repeated,
        differing: response.differing as u64,
        updated: response.updated as u64,
        update: options.update,
        refused: reading.refused + response.failed as u64,
        errors: reading.errors,
        dry_run: options.dry_run,
    };
    for error in &response.errors {
        let Some(sent) = usize::try_from(error.index)
            .ok()
            .and_then(|i| reading.sent.get(i))
        else {
            continue;
        };
        let (column, entry) = column_of(&error.field, sent.history);
        report.errors.push(RowError {
            line: sent.line,
            column,
            reason: format!("{entry}{}", error.reason),
        });
    }
    report.errors.sort_by_key(|e| e.line);
    Ok(report)
}

/// The pipelines the file's rows name, looked up once. A missing one stops the import before
/// any row is written, rather than refusing every row that names it.
async fn pipelines_of(
    app: &crate::app::Services,
    ctx: &crate::app::RequestContext,
    prepared: &Prepared,
    mapping: &Mapping,
    // Checked against, not read, in a dry run that would create them.
    planned: &[PipelineSpec],
) -> Result<HashMap<String, Arc<PipelineDefinition>>, String> {
    let mut named: BTreeMap<String, u64> = BTreeMap::new();
    let mut csv = reader(&prepared.source.text, prepared.delimiter);
    let mut record = ::csv::StringRecord::new();
    while let Ok(true) = csv.read_record(&mut record) {
        let mut row = prepared.layout.row(&record);
        mapping.fill_defaults(&mut row);
        *named.entry(row.pipeline_id.trim().to_owned()).or_default() += 1;
    }
    let mut found = HashMap::new();
    for (name, rows) in named {
        let id = if name.is_empty() {
            PipelineId::default_pipeline()
        } else {
            match PipelineId::parse(&name) {
                Ok(id) => id,
                // Reported on each row, with the column.
                Err(_) => continue,
            }
        };
        match app.import.pipeline(ctx, &id).await {
            Ok(Some(pipeline)) => {
                found.insert(name, Arc::new(pipeline.definition().clone()));
            }
            Ok(None) if let Some(spec) = planned.iter().find(|p| p.id == name) => {
                let definition = super::pipelines::definition_of(spec)?;
                found.insert(name, Arc::new(definition));
            }
            Ok(None) => {
                return Err(format!(
                    "pipeline {:?}, named by {rows} row{}, does not exist in tenant {}: create \
                     it first, e.g. with `leadpipe pipelines apply FILE` from the source's \
                     `leadpipe pipelines export`",
                    id.as_str(),
                    if rows == 1 { "" } else { "s" },
                    ctx.tenant.as_str()
                ));
            }
            Err(error) => return Err(format!("cannot read pipeline {:?}: {error}", id.as_str())),
        }
    }
    Ok(found)
}

/// Reads every row, sending the good ones to the import.
fn read_rows(
    prepared: &Prepared,
    rules: &ReadRules<'_>,
    pipelines: &HashMap<String, Arc<PipelineDefinition>>,
    histories: &HashMap<String, SourceHistory>,
    update: bool,
    tx: &mpsc::Sender<Result<ImportRow, AppError>>,
    progress: &indicatif::ProgressBar,
) -> Result<Reading, String> {
    let mut reading = Reading::default();
    let mut csv = reader(&prepared.source.text, prepared.delimiter);
    // Each external id's line and content, to tell a repeated row from a conflicting one.
    let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
    let mut record = ::csv::StringRecord::new();
    let mut lookup = |id: &str| pipelines.get(id.trim()).cloned();
    loop {
        let offset = csv.position().byte() as usize;
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                let offset = error.position().map_or(offset, |p| p.byte() as usize);
                let line = prepared.source.line_of_row(offset);
                reading.rows += 1;
                reading.refuse(line, [(String::new(), csv_reason(&error))]);
                continue;
            }
        }
        progress.inc(1);
        // A blank line between rows is not a row.
        if record.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        reading.rows += 1;
        let offset = record.position().map_or(offset, |p| p.byte() as usize);
        let line = prepared.source.line_of_row(offset);
        let mut row = prepared.layout.row(&record);
        rules.mapping.fill_defaults(&mut row);
        let external_id = row.external_id.trim().to_owned();
        if row.history.trim().is_empty()
            && row.entered.is_empty()
            && let Some(history) = histories.get(&external_id)
        {
            row.history = history.to_column(&row.created_at, &row.stage);
            if let Some((amount, close_date)) = &history.created_with {
                // The row holds the lead as it is now; the history how it started.
                row.amount.clone_from(amount);
                row.close_date.clone_from(close_date);
                row.edits.clone_from(&history.edits);
            }
            // The history gives the times; a report's dates are less precise.
            if history.from_creation {
                row.created_at.clear();
            }
            row.stage_entered_at.clear();
        }
        if !external_id.is_empty() {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            row.hash(&mut hasher);
            let content = hasher.finish();
            match seen.get(&external_id) {
                Some(&(_, same)) if same == content => {
                    reading.repeated += 1;
                    continue;
                }
                Some(&(first, _)) => {
                    reading.refuse(
                        line,
                        [(
                            "external_id".to_owned(),
                            format!(
                                "{external_id:?} is also on line {first}, with different content"
                            ),
                        )],
                    );
                    progress.set_message(format!("{} refused", reading.refused));
                    continue;
                }
                None => {
                    seen.insert(external_id, (line, content));
                }
            }
        }
        match row_to_message(&row, rules, &mut lookup) {
            Ok(mut converted) => {
                reading.sent.push(Sent {
                    line,
                    history: converted.history,
                });
                converted.message.update_existing = update;
                let mut row = ImportRow::from(converted.message);
                // A history made up from the stage columns says only where the lead is now.
                if let Ok(parsed) = &mut row.parsed {
                    parsed.history_derived = converted.history == HistorySource::Derived;
                }
                if tx.blocking_send(Ok(row)).is_err() {
                    // The import ended early; its error is reported by the caller.
                    break;
                }
            }
            Err(errors) => {
                reading.refuse(line, errors.into_iter().map(|e| (e.column, e.reason)));
                progress.set_message(format!("{} refused", reading.refused));
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
        _ => error.to_string(),
    }
}

/// `leadpipe import`: prints refused rows on stderr, a few per reason, and the summary on
/// stdout. The exit code is 0 when every row is in (imported now or before), 2 when some rows
/// were refused (the others are in), and 1 when the import could not run.
pub async fn main(
    config: &StoreConfig,
    tenant: &TenantId,
    path: &Path,
    options: &ImportOptions,
) -> i32 {
    match run(config, tenant, path, options).await {
        Ok(report) => {
            let name = display_name(path);
            let mut listed: HashMap<String, usize> = HashMap::new();
            for error in &report.errors {
                let shown = listed.entry(error.kind()).or_default();
                *shown += 1;
                if *shown > LISTED_PER_REASON {
                    continue;
                }
                if error.column.is_empty() {
                    eprintln!("{name}:{}: {}", error.line, error.reason);
                } else {
                    eprintln!("{name}:{}: {}: {}", error.line, error.column, error.reason);
                }
            }
            let mut more: Vec<_> = listed
                .into_iter()
                .filter(|(_, n)| *n > LISTED_PER_REASON)
                .collect();
            more.sort();
            for (kind, n) in more {
                eprintln!("{name}: {} more rows with: {kind}", n - LISTED_PER_REASON);
            }
            println!("{}", report.summary());
            if report.refused > 0 { 2 } else { 0 }
        }
        Err(message) => {
            eprintln!("error: {}: {message}", display_name(path));
            1
        }
    }
}

fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// The file to import and how, from the command line: a preset's mapping, pipeline and
/// history files, or `--mapping FILE`, with the flags over either.
#[allow(clippy::too_many_arguments)]
pub fn options_from_flags(
    preset: Option<Preset>,
    files: &[PathBuf],
    mapping: Option<&PathBuf>,
    ignore_unknown_columns: bool,
    timezone: Option<&str>,
    date_formats: &[String],
    delimiter: Option<&str>,
    encoding: Option<&str>,
    dry_run: bool,
) -> Result<(PathBuf, ImportOptions), String> {
    let Some((first, rest)) = files.split_first() else {
        return Err("give the file to import".into());
    };
    let base = match (preset, mapping) {
        (Some(_), Some(_)) => {
            return Err("--preset and --mapping cannot be combined: a preset is a mapping".into());
        }
        (Some(preset), None) => Some(preset.mapping()),
        (None, Some(path)) => Some(Mapping::load(path)?),
        (None, None) => None,
    };
    let mapping = mapping_from_flags(
        base,
        ignore_unknown_columns,
        timezone,
        date_formats,
        delimiter,
        encoding,
    )?;
    let mut options = ImportOptions {
        mapping,
        dry_run,
        ..Default::default()
    };
    match preset {
        Some(preset) => {
            let rest: Vec<&Path> = rest.iter().map(PathBuf::as_path).collect();
            options.histories = preset.history(&rest)?;
            options.pipelines = vec![preset.pipeline()];
        }
        None if !rest.is_empty() => {
            return Err("import one file at a time; several files go with --preset salesforce or pipedrive (the history)".into());
        }
        None => {}
    }
    Ok((first.clone(), options))
}

/// The mapping the command line gives: a base (a preset's or `--mapping FILE`'s), then the
/// flags over it.
pub fn mapping_from_flags(
    base: Option<Mapping>,
    ignore_unknown_columns: bool,
    timezone: Option<&str>,
    date_formats: &[String],
    delimiter: Option<&str>,
    encoding: Option<&str>,
) -> Result<Mapping, String> {
    let mut mapping = base.unwrap_or_default();
    mapping.ignore_unknown_columns |= ignore_unknown_columns;
    if let Some(zone) = timezone {
        mapping.dates.timezone = Some(zone.to_owned());
    }
    if !date_formats.is_empty() {
        let mut formats = date_formats.to_vec();
        formats.append(&mut mapping.dates.formats);
        mapping.dates.formats = formats;
    }
    if let Some(delimiter) = delimiter {
        mapping.delimiter = Some(delimiter.to_owned());
    }
    if let Some(encoding) = encoding {
        mapping.encoding = Some(encoding.to_owned());
    }
    mapping.check()?;
    Ok(mapping)
}
