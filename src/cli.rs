//! The command line: `vitte serve | migrate | check-config | chat --persona ID`.

use anyhow::Context;
use clap::{Parser, Subcommand};

use vitte_actors::persona::PersonaCatalog;

use crate::config::{ConfigError, ConfigSource, Purpose, Settings};
use crate::startup::{Application, Customization};
use crate::storage::Database;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "vitte",
    version,
    about = "Actor-based runtime for Telegram AI chat bots"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bot: Telegram ingress, sessions and the HTTP server.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets redacted) and check it.
    CheckConfig,
    /// Talk to a persona in the terminal, without Telegram.
    Chat {
        /// The persona id (its file name in personas/, without .toml).
        #[arg(long)]
        persona: String,
    },
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = load_settings()?;
    match cli.command {
        Command::CheckConfig => {
            print!("{}", settings.to_redacted_toml());
            settings.validate(Purpose::Serve).map_err(config_error)?;
            let personas = PersonaCatalog::load_dir(&settings.personas.dir)?;
            eprintln!(
                "configuration is valid; {} personas load",
                personas.all().len()
            );
            Ok(())
        }
        Command::Serve => {
            settings.validate(Purpose::Serve).map_err(config_error)?;
            telemetry::init(settings.log.format, &settings.log.level);
            actix_rt::System::new().block_on(async move {
                let customization = Customization {
                    config_source: Some(ConfigSource::from_env()),
                    ..Customization::default()
                };
                let application = Application::build_with(settings, customization).await?;
                application.run_until_stopped().await
            })
        }
        Command::Migrate => {
            settings.validate(Purpose::Migrate).map_err(config_error)?;
            telemetry::init(settings.log.format, &settings.log.level);
            actix_rt::System::new().block_on(async move {
                let database = Database::connect(
                    &settings.database_target()?,
                    settings.database.max_connections,
                )?;
                let applied = database.migrate().await.context("applying migrations")?;
                println!("{applied} migration(s) applied; the database is up to date");
                Ok(())
            })
        }
        Command::Chat { persona } => {
            settings.validate(Purpose::Chat).map_err(config_error)?;
            // The terminal is for the conversation: only warnings go to stderr.
            telemetry::init(settings.log.format, "warn");
            actix_rt::System::new().block_on(crate::chat::run(settings, &persona))
        }
    }
}

fn load_settings() -> anyhow::Result<Settings> {
    Settings::load().map_err(config_error)
}

fn config_error(error: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("configuration error: {error}")
}
