//! The command line, run as a separate process like an operator would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{FakeLlm, first_story, story_opening};

fn vitte(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vitte"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VITTE_ENV", "local");
    // The outer environment must not leak settings into these checks.
    for (key, _) in std::env::vars() {
        if key.starts_with("VITTE__") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the vitte binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_config_names_the_missing_key_in_one_line() {
    let output = vitte(&["check-config"], &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(message.contains("telegram.token"), "{message}");
    assert!(message.contains("VITTE__TELEGRAM__TOKEN"), "{message}");
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let output = vitte(
        &["check-config"],
        &[
            ("VITTE__TELEGRAM__TOKEN", "987654:super-secret-token"),
            ("VITTE__LLM__API_KEY", "sk-live-secret"),
            ("VITTE__LLM__MODEL", "gpt-4o-mini"),
            (
                "VITTE__DATABASE__URL",
                "postgres://vitte:db-password@db.internal/vitte",
            ),
            ("VITTE__MEMORY__EXTRACT_AFTER_MESSAGES", "8"),
            (
                "VITTE__MEMORY__EMBEDDINGS__BASE_URL",
                "https://embeddings.example.org/v1",
            ),
            ("VITTE__MEMORY__EMBEDDINGS__API_KEY", "sk-embeddings-secret"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("model = \"gpt-4o-mini\""),
        "env overrides apply: {printed}"
    );
    assert!(printed.contains("db.internal"), "which database is shown");
    assert!(printed.contains("extract_after_messages = 8"), "{printed}");
    assert!(printed.contains("base_url = \"https://embeddings.example.org/v1\""));
    for secret in [
        "super-secret-token",
        "sk-live-secret",
        "db-password",
        "sk-embeddings-secret",
    ] {
        assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        assert!(!stderr(&output).contains(secret));
    }
}

#[test]
fn a_wrong_value_type_is_named() {
    let output = vitte(
        &["check-config"],
        &[
            ("VITTE__TELEGRAM__TOKEN", "1:x"),
            ("VITTE__SESSION__SHARDS", "many"),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("shards"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
}

#[test]
fn serve_stops_at_a_broken_persona_file_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let personas = Path::new(env!("CARGO_MANIFEST_DIR")).join("personas");
    for entry in std::fs::read_dir(personas).expect("personas") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(
        dir.path().join("broken.toml"),
        "name = \"Broken\"\ndescription = \"x\"\nfirst_mes = 42\n",
    )
    .expect("write");
    let data = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", data.path().join("vitte.db").display());
    let output = vitte(
        &["serve"],
        &[
            ("VITTE__TELEGRAM__TOKEN", "1:x"),
            ("VITTE__PERSONAS__DIR", &dir.path().display().to_string()),
            ("VITTE__DATABASE__URL", &database),
            ("VITTE__HTTP__ADDRESS", "127.0.0.1:0"),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("broken.toml"), "{message}");
    assert!(message.contains("`first_mes`"), "{message}");
}

#[test]
fn migrate_creates_the_database_once() {
    let data = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", data.path().join("sub/vitte.db").display());
    let env = [("VITTE__DATABASE__URL", database.as_str())];
    let first = vitte(&["migrate"], &env);
    assert!(first.status.success(), "{}", stderr(&first));
    let applied: usize = String::from_utf8_lossy(&first.stdout)
        .split_whitespace()
        .next()
        .and_then(|count| count.parse().ok())
        .expect("a count of migrations");
    let expected =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"))
            .expect("migrations")
            .count();
    assert_eq!(applied, expected, "every migration applied");
    let second = vitte(&["migrate"], &env);
    assert!(String::from_utf8_lossy(&second.stdout).starts_with("0 migration(s) applied"));
}

#[test]
fn serve_fails_fast_naming_a_bad_key() {
    let output = vitte(
        &["serve"],
        &[
            ("VITTE__TELEGRAM__TOKEN", "1:x"),
            ("VITTE__TELEGRAM__MODE", "webhook"),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("telegram.webhook_url"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
}

#[test]
fn check_config_also_checks_the_personas() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("solo.toml"), "name = \"Solo\"\n").expect("write");
    let output = vitte(
        &["check-config"],
        &[
            ("VITTE__TELEGRAM__TOKEN", "1:x"),
            ("VITTE__PERSONAS__DIR", &dir.path().display().to_string()),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("solo.toml") && message.contains("`description`"),
        "{message}"
    );
}

/// Runs `vitte chat` with `input` on stdin against `llm`, on a fresh SQLite file.
fn chat(persona: &str, input: &str, llm: &str) -> Output {
    let data = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", data.path().join("vitte.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitte"))
        .args(["chat", "--persona", persona])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VITTE_ENV", "local")
        .env("VITTE__LLM__BASE_URL", llm)
        .env("VITTE__DATABASE__URL", database)
        .env("USER", "Ann")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vitte chat starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the conversation");
    child.wait_with_output().expect("vitte chat ends")
}

#[actix_rt::test]
async fn chat_talks_to_a_persona_in_the_terminal() {
    let llm = FakeLlm::start().await;
    let url = llm.base_url();
    let output = tokio::task::spawn_blocking(move || {
        chat("mira", "Who keeps this lighthouse?\n/help\n", &url)
    })
    .await
    .expect("the chat ran");
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    let opening = story_opening("mira", &first_story("mira"), "Ann");
    let greeting = printed
        .find(&opening.chars().take(30).collect::<String>())
        .expect("the story's opening");
    let reply = printed
        .find("echo: Who keeps this lighthouse?")
        .expect("the reply");
    let help = printed.find("/start").expect("the help");
    assert!(greeting < reply && reply < help, "in order: {printed}");
    let request = llm.requests().pop().expect("one LLM request");
    assert!(
        request.to_string().contains("Ann"),
        "{{user}} is the terminal user"
    );
    llm.stop().await;
}

#[actix_rt::test]
async fn chat_refuses_an_unknown_persona() {
    let llm = FakeLlm::start().await;
    let url = llm.base_url();
    let output = tokio::task::spawn_blocking(move || chat("nobody", "hi\n", &url))
        .await
        .expect("the chat ran");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("nobody") && message.contains("mira"),
        "{message}"
    );
    assert!(llm.requests().is_empty());
    llm.stop().await;
}

#[test]
fn persona_check_validates_the_nine_shipped_personas_and_their_stories() {
    let output = vitte(&["persona", "check"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    let personas: Vec<&str> = printed.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(personas.len(), 9, "{printed}");
    for line in &personas {
        let stories: usize = line
            .split(": ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|count| count.parse().ok())
            .expect("a story count");
        assert!(stories >= 4, "four or more stories each: {line}");
    }
    assert!(
        personas
            .iter()
            .any(|line| line.contains("(Sable)") && line.ends_with("adult")),
        "{printed}"
    );
    assert!(printed.contains("9 personas, "), "{printed}");
}

#[test]
fn persona_check_reports_every_broken_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let personas = Path::new(env!("CARGO_MANIFEST_DIR")).join("personas");
    std::fs::copy(personas.join("mira.toml"), dir.path().join("mira.toml")).expect("copy");
    let arlo = std::fs::read_to_string(personas.join("arlo.toml")).expect("arlo");
    // A story card without its opening, and a file without stories.
    let without_opening = arlo.replacen("opening_message", "opening_mesage", 1);
    std::fs::write(dir.path().join("arlo.toml"), without_opening).expect("write");
    std::fs::write(
        dir.path().join("solo.toml"),
        "name = \"Solo\"\ndescription = \"d\"\nfirst_mes = \"hi\"\n",
    )
    .expect("write");
    let output = vitte(
        &[
            "persona",
            "check",
            "--dir",
            &dir.path().display().to_string(),
        ],
        &[],
    );
    assert!(!output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("ok     mira (Mira)"), "{printed}");
    assert!(
        printed.contains("arlo.toml") && printed.contains("opening_mesage"),
        "{printed}"
    );
    assert!(
        printed.contains("solo.toml") && printed.contains("field `stories`"),
        "{printed}"
    );
    assert!(stderr(&output).contains("2 of 3 persona files are invalid"));
}

#[test]
fn persona_import_converts_a_character_card_v2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let card = dir.path().join("card.json");
    std::fs::write(
        &card,
        r#"{"spec":"chara_card_v2","spec_version":"2.0","data":{
            "name":"Old Tom","description":"{{char}} keeps the ferry.","personality":"gruff",
            "scenario":"{{user}} misses the last ferry.","first_mes":"Missed it, did you?",
            "mes_example":"","creator_notes":"A ferryman. Knows the river.",
            "system_prompt":"","post_history_instructions":"",
            "alternate_greetings":["Fog again."],"tags":[],"creator":"","character_version":"1",
            "extensions":{}}}"#,
    )
    .expect("write card");
    let out = dir.path().join("personas");
    let out_arg = out.display().to_string();
    let card_arg = card.display().to_string();
    let output = vitte(&["persona", "import", &card_arg, "--dir", &out_arg], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(out.join("old-tom.toml").exists());
    let check = vitte(&["persona", "check", "--dir", &out_arg], &[]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok     old-tom (Old Tom): 2 stories"));
    // Importing again does not overwrite without --force.
    let again = vitte(&["persona", "import", &card_arg, "--dir", &out_arg], &[]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    // Not a V2 card: a clear error.
    std::fs::write(&card, r#"{"name":"V1","description":"d","first_mes":"hi"}"#).expect("v1");
    let v1 = vitte(&["persona", "import", &card_arg, "--dir", &out_arg], &[]);
    assert!(!v1.status.success());
    assert!(stderr(&v1).contains("Character Card V2"), "{}", stderr(&v1));
}

#[test]
fn a_broken_safety_file_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let safety = dir.path().join("safety.toml");
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/safety.toml"))
            .expect("safety.toml");
    // An unclosed group in the first refusal pattern.
    let broken = shipped.replacen("patterns = [\n    \"(?i)", "patterns = [\n    \"(?i)((", 1);
    assert_ne!(broken, shipped);
    std::fs::write(&safety, broken).expect("write");
    let output = vitte(
        &["check-config"],
        &[
            ("VITTE__TELEGRAM__TOKEN", "1:x"),
            ("VITTE__SAFETY__FILE", &safety.display().to_string()),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("safety.toml") && message.contains("bad pattern"),
        "{message}"
    );
}

#[test]
fn supervision_settings_from_the_environment_are_read_with_their_types() {
    let output = vitte(
        &["check-config"],
        &[
            ("VITTE__TELEGRAM__TOKEN", "987654:token"),
            (
                "VITTE__SUPERVISION__SESSION__RESTART_INTENSITY__MAX_RESTARTS",
                "77",
            ),
            ("VITTE__SUPERVISION__SESSION__MAILBOX_CAPACITY", "3"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("max_restarts = 77"), "{printed}");
    assert!(printed.contains("mailbox_capacity = 3"), "{printed}");
}
