use leadpipe::config::{Cli, Command};
use leadpipe::server::{App, shutdown_signal};
use leadpipe::store::Store;

/// mimalloc rather than glibc malloc: decoding rows and encoding replies allocate many small,
/// short-lived buffers across threads, which glibc serves slowly (BENCHMARKS.md, "The allocator change").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::load();
    let otlp_endpoint = match &cli.command {
        Some(Command::Serve(args)) => args.otlp_endpoint.clone(),
        _ => None,
    };
    let mut telemetry = None;
    // The keys commands print for people and scripts; logs would only get in the way.
    if !matches!(
        cli.command,
        Some(
            Command::Keys(_)
                | Command::Import(_)
                | Command::Export(_)
                | Command::Pipelines(_)
                | Command::Demo(_)
                | Command::Health(_)
        )
    ) {
        telemetry = Some(leadpipe::telemetry::init(otlp_endpoint.as_deref())?);
    }
    let store_config = cli.database.store_config();
    match cli
        .command
        .expect("Cli::load picks serve without a subcommand")
    {
        Command::Migrate => {
            let store = Store::connect(&store_config).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            store.close().await;
        }
        Command::Serve(args) => {
            let mut settings = args.settings(&cli.database);
            settings.tls = args.tls()?;
            // Returns at once: the server binds and reports NOT_SERVING until the database is
            // reachable and migrated.
            let app = App::start(&settings).await?;
            // Refuse before binding: never serve a non-loopback address without authentication
            // unless the operator opted out.
            app.check_auth(args.listen).await?;
            if let Some(address) = args.metrics_listen {
                app.serve_metrics(tokio::net::TcpListener::bind(address).await?);
            }
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            let served = app.serve(listener, shutdown_signal()).await;
            if let Some(telemetry) = telemetry.take() {
                telemetry.shutdown().await;
            }
            served?;
        }
        Command::Import(args) => {
            let prepared = leadpipe::bulk::import::options_from_flags(
                args.preset,
                &args.files,
                args.mapping.as_ref(),
                args.ignore_unknown_columns,
                args.timezone.as_deref(),
                &args.date_formats,
                args.delimiter.as_deref(),
                args.encoding.as_deref(),
                args.dry_run,
            )
            .map(|(file, mut options)| {
                options.update = args.update;
                (file, options)
            });
            if let Some(file) = &args.pipelines {
                match leadpipe::bulk::pipelines::apply(&store_config, &args.tenant, file).await {
                    Ok(applied) => {
                        for done in applied {
                            eprintln!("{done}");
                        }
                    }
                    Err(message) => {
                        eprintln!("error: {message}");
                        std::process::exit(1);
                    }
                }
            }
            let code = match prepared {
                Ok((file, options)) => {
                    leadpipe::bulk::import::main(&store_config, &args.tenant, &file, &options).await
                }
                Err(message) => {
                    eprintln!("error: {message}");
                    1
                }
            };
            std::process::exit(code);
        }
        Command::Pipelines(command) => {
            use leadpipe::bulk::pipelines::{Format, apply, export};
            use leadpipe::config::PipelinesCommand;
            let result = match command {
                PipelinesCommand::Export {
                    output,
                    format,
                    tenant,
                } => {
                    let format = format
                        .unwrap_or_else(|| output.as_deref().map_or(Format::Toml, Format::of));
                    match export(&store_config, &tenant, format).await {
                        Ok(text) => match output {
                            Some(path) => std::fs::write(&path, text)
                                .map_err(|e| format!("cannot write {}: {e}", path.display())),
                            None => {
                                print!("{text}");
                                Ok(())
                            }
                        },
                        Err(message) => Err(message),
                    }
                }
                PipelinesCommand::Apply { file, tenant } => {
                    apply(&store_config, &tenant, &file).await.map(|applied| {
                        for done in applied {
                            println!("{done}");
                        }
                    })
                }
            };
            if let Err(message) = result {
                eprintln!("error: {message}");
                std::process::exit(1);
            }
        }
        Command::Export(args) => {
            if let Some(path) = &args.pipelines {
                let format = leadpipe::bulk::pipelines::Format::of(path);
                let written =
                    leadpipe::bulk::pipelines::export(&store_config, &args.tenant, format)
                        .await
                        .and_then(|text| {
                            std::fs::write(path, text)
                                .map_err(|e| format!("cannot write {}: {e}", path.display()))
                        });
                if let Err(message) = written {
                    eprintln!("error: {message}");
                    std::process::exit(1);
                }
            }
            let output = args.output.as_deref();
            match leadpipe::bulk::export::run(&store_config, &args.tenant, &args.filter, output)
                .await
            {
                Ok(written) if output.is_some() => {
                    eprintln!(
                        "exported {written} lead{}",
                        if written == 1 { "" } else { "s" }
                    )
                }
                Ok(_) => {}
                Err(message) => {
                    eprintln!("error: {message}");
                    std::process::exit(1);
                }
            }
        }
        Command::Health(args) => {
            let address = leadpipe::health_cli::probe_address(args.listen);
            if let Err(message) =
                leadpipe::health_cli::check(address, &args.service, args.timeout).await
            {
                eprintln!("unhealthy: {message}");
                std::process::exit(1);
            }
        }
        Command::Demo(args) => {
            let options = leadpipe::bulk::demo::DemoOptions {
                leads: args.leads,
                days: args.days,
                seed: args.seed,
                until: args
                    .until
                    .unwrap_or_else(leadpipe::bulk::demo::DemoOptions::today),
            };
            let code = leadpipe::bulk::demo::main(&store_config, &args.tenant, &options).await;
            std::process::exit(code);
        }
        Command::Keys(command) => {
            if let Err(message) = leadpipe::keys_cli::run(&store_config, command).await {
                eprintln!("error: {message}");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
