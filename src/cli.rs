//! The command line: `vitte serve | migrate | check-config | chat --persona ID |
//! persona check | persona import CARD.json | simulate-broadcast --users N`.

use anyhow::Context;
use clap::{Parser, Subcommand};

use std::path::{Path, PathBuf};

use vitte_actors::domain::persona::{PersonaCatalog, import_character_card};
use vitte_actors::domain::safety::SafetyPolicy;

use crate::config::{ConfigError, ConfigSource, Purpose, Settings};
use crate::startup::{Application, Customization};
use crate::storage::Database;
use crate::telemetry;
use vitte_actors::ports::SystemClock;

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
    /// Check or import persona files.
    #[command(subcommand)]
    Persona(PersonaCommand),
    /// Run a broadcast to N made-up users through the real scheduler, outbox and storage in
    /// simulated time: how long it takes under `[outbox]`'s limits, whether it keeps to
    /// them, and the memory it needs. Nothing is sent to Telegram.
    SimulateBroadcast {
        #[arg(long, default_value_t = 100_000)]
        users: usize,
    },
    /// Ask the running server for `path` (default `/health/live`) on this configuration's
    /// `http.address`, and exit 0 if it answers 200: the Docker HEALTHCHECK (the runtime
    /// image has no curl).
    Probe {
        #[arg(long, default_value = "/health/live")]
        path: String,
    },
    /// Print the reference that logs use for a Telegram user (a keyed hash of the id, under
    /// this configuration's key), to find a user's lines in the logs.
    UserRef { telegram_id: i64 },
}

#[derive(Debug, Subcommand)]
enum PersonaCommand {
    /// Validate every persona file and report every problem (exit code 1 if any).
    Check {
        /// The directory to check (default: `personas.dir` of the configuration).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Convert a Character Card V2 JSON (chara_card_v2) into a persona file.
    Import {
        /// The card's JSON file.
        card: PathBuf,
        /// Where to write `<id>.toml` (default: `personas.dir` of the configuration).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Overwrite an existing persona file of the same id.
        #[arg(long)]
        force: bool,
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
            SafetyPolicy::load(&settings.safety.file)?;
            let catalogue = settings.catalogue().map_err(config_error)?;
            eprintln!(
                "configuration is valid; {} personas, the safety rules and {} products load",
                personas.all().len(),
                catalogue.all().len()
            );
            Ok(())
        }
        Command::Persona(PersonaCommand::Check { dir }) => {
            check_personas(dir.as_deref().unwrap_or(&settings.personas.dir))
        }
        Command::Persona(PersonaCommand::Import { card, dir, force }) => import_persona(
            &card,
            dir.as_deref().unwrap_or(&settings.personas.dir),
            force,
        ),
        Command::Serve => {
            settings.validate(Purpose::Serve).map_err(config_error)?;
            // Kept to the end of `serve`: dropping it flushes the error reports.
            let _reports = telemetry::init_serving(&settings)?;
            telemetry::set_log_key(&settings);
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
                    std::sync::Arc::new(SystemClock),
                )?;
                let applied = database.migrate().await.context("applying migrations")?;
                println!("{applied} migration(s) applied; the database is up to date");
                Ok(())
            })
        }
        Command::Probe { path } => probe(&settings.http.address, &path),
        Command::UserRef { telegram_id } => {
            crate::telemetry::set_log_key(&settings);
            println!("{}", vitte_actors::domain::privacy::user_ref(telegram_id));
            Ok(())
        }
        Command::SimulateBroadcast { users } => {
            settings.validate(Purpose::Migrate).map_err(config_error)?;
            telemetry::init(settings.log.format, "warn");
            let report = actix_rt::System::new().block_on(async move {
                crate::simulate::simulate_broadcast(&settings, users).await
            })?;
            println!("{report:#?}");
            Ok(())
        }
        Command::Chat { persona } => {
            settings.validate(Purpose::Chat).map_err(config_error)?;
            // The terminal is for the conversation: only warnings go to stderr.
            telemetry::init(settings.log.format, "warn");
            actix_rt::System::new().block_on(crate::chat::run(settings, &persona))
        }
    }
}

/// `vitte persona check`: one line per persona file, then a summary.
fn check_personas(dir: &Path) -> anyhow::Result<()> {
    let (personas, problems) = PersonaCatalog::check_dir(dir)?;
    for persona in &personas {
        let adult = if persona.adult { ", adult" } else { "" };
        println!(
            "ok     {} ({}): {} stories{adult}",
            persona.id,
            persona.name,
            persona.stories.len()
        );
    }
    for problem in &problems {
        println!("error  {problem}");
    }
    let stories: usize = personas.iter().map(|persona| persona.stories.len()).sum();
    if problems.is_empty() {
        println!("{} personas, {stories} stories: all valid", personas.len());
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} persona files are invalid",
            problems.len(),
            problems.len() + personas.len()
        )
    }
}

/// `vitte persona import CARD.json`: writes `<dir>/<id>.toml`.
fn import_persona(card: &Path, dir: &Path, force: bool) -> anyhow::Result<()> {
    let json =
        std::fs::read_to_string(card).with_context(|| format!("reading {}", card.display()))?;
    let imported =
        import_character_card(&json).with_context(|| format!("importing {}", card.display()))?;
    let path = dir.join(format!("{}.toml", imported.id));
    if path.exists() && !force {
        anyhow::bail!(
            "{} exists already; pass --force to overwrite it",
            path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, imported.toml).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn load_settings() -> anyhow::Result<Settings> {
    Settings::load().map_err(config_error)
}

fn config_error(error: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("configuration error: {error}")
}

/// `GET path` on the local server at `address`'s port; Ok if it answers 200 within 5 s.
fn probe(address: &str, path: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let port = address
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok())
        .with_context(|| format!("http.address {address:?} has no port"))?;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = Vec::new();
    // HTTP/1.0: the server closes the connection after the answer.
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if status_line.split_whitespace().nth(1) == Some("200") {
        println!("{path}: {status_line}");
        Ok(())
    } else {
        anyhow::bail!("{path} answered {status_line:?}")
    }
}
