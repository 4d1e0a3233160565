use clap::Parser;
use leadpipe::config::{Cli, Command, ServeArgs};
use leadpipe::server::{App, shutdown_signal};
use leadpipe::store::Store;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::parse();
    // The keys commands print for people and scripts; logs would only get in the way.
    if !matches!(cli.command, Some(Command::Keys(_))) {
        leadpipe::telemetry::init();
    }
    let store_config = cli.database.store_config();
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::from_env()))
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
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            app.serve(listener, shutdown_signal()).await?;
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
