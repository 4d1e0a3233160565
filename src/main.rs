use clap::Parser;
use leadpipe::config::{Cli, Command, ServeArgs};
use leadpipe::server::{App, shutdown_signal};
use leadpipe::store::Store;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::parse();
    leadpipe::telemetry::init();
    let store_config = cli.database.store_config();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Migrate => {
            let store = Store::connect(&store_config).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            store.close().await;
        }
        Command::Serve(args) => {
            let app = App::build(&args.settings(&cli.database)).await?;
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            app.serve(listener, shutdown_signal()).await?;
        }
    }
    Ok(())
}
