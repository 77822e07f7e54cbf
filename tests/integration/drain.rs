//! `vitte serve` run as a separate process, as operators run it. Stopped as Kubernetes does,
//! with SIGTERM: not ready at once, new updates turned away (Telegram delivers them again),
//! the reply in flight finished, exit 0; a second SIGTERM stops at once. Its JSON logs name
//! users by a keyed reference, never by id or by what they wrote.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// `vitte serve` in webhook mode against the fakes, on SQLite in `data`.
struct Served {
    child: Child,
    address: String,
    http: reqwest::Client,
}

impl Served {
    async fn start(telegram: &FakeTelegram, llm: &FakeLlm, data: &Path) -> Served {
        Served::start_with(telegram, llm, data, &[]).await
    }

    async fn start_with(
        telegram: &FakeTelegram,
        llm: &FakeLlm,
        data: &Path,
        extra: &[(&str, &str)],
    ) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let database = format!("sqlite://{}", data.join("vitte.db").display());
        let mut command = Command::new(env!("CARGO_BIN_EXE_vitte"));
        command
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("VITTE_ENV", "local")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("VITTE__") {
                command.env_remove(key);
            }
        }
        command.envs([
            ("VITTE__TELEGRAM__TOKEN", "123456:TEST".to_owned()),
            ("VITTE__TELEGRAM__API_URL", telegram.api_url()),
            ("VITTE__TELEGRAM__MODE", "webhook".to_owned()),
            (
                "VITTE__TELEGRAM__WEBHOOK_URL",
                "https://bot.example.org/telegram/webhook".to_owned(),
            ),
            ("VITTE__TELEGRAM__WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("VITTE__LLM__BASE_URL", llm.base_url()),
            ("VITTE__LLM__API_KEY", "sk-test".to_owned()),
            ("VITTE__DATABASE__URL", database),
            ("VITTE__HTTP__ADDRESS", format!("127.0.0.1:{port}")),
            ("VITTE__MEMORY__ENABLED", "false".to_owned()),
            ("VITTE__NOTIFICATIONS__QUIET_START", "0".to_owned()),
            ("VITTE__NOTIFICATIONS__QUIET_END", "0".to_owned()),
        ]);
        command.envs(extra.iter().map(|(key, value)| (*key, *value)));
        let served = Served {
            child: command.spawn().expect("vitte serve starts"),
            address: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.ready().await != Some(200) {
            assert!(Instant::now() < deadline, "vitte never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    }

    /// `/health/ready`'s status, `None` when nothing answers.
    async fn ready(&self) -> Option<u16> {
        let response = self
            .http
            .get(format!("{}/health/ready", self.address))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    async fn post_update(&self, update: &Value) -> u16 {
        self.http
            .post(format!("{}/telegram/webhook", self.address))
            .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
            .json(update)
            .send()
            .await
            .expect("the webhook answers")
            .status()
            .as_u16()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits up to `patience` for the process to exit.
    async fn exit_within(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().expect("the process") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vitte did not exit within {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user with a dialog whose next reply is being written (the LLM holds it).
async fn reply_in_flight(served: &Served, telegram: &FakeTelegram, llm: &FakeLlm, user: i64) {
    let start = format!("s:mira:{}", first_story("mira"));
    let pressed = callback_update(1, user, "Dana", "en", &start);
    assert_eq!(served.post_update(&pressed).await, 200);
    wait_until("the story's opening", || {
        (!telegram.sent_texts(user).is_empty()).then_some(())
    })
    .await;
    llm.hold();
    let message = text_update(2, user, "Dana", "en", "tell me more");
    assert_eq!(served.post_update(&message).await, 200);
    wait_until("the LLM asked", || {
        (!llm.requests().is_empty()).then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn sigterm_finishes_the_reply_in_flight_turns_new_updates_away_and_exits_0() {
    let (telegram, llm) = (FakeTelegram::start().await, FakeLlm::start().await);
    let data = tempfile::tempdir().expect("a data dir");
    let mut served = Served::start(&telegram, &llm, data.path()).await;
    // The Docker HEALTHCHECK: `vitte probe` asks the running server.
    let address = served.address.trim_start_matches("http://").to_owned();
    let probe = |path: &str| {
        Command::new(env!("CARGO_BIN_EXE_vitte"))
            .args(["probe", "--path", path])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("VITTE_ENV", "local")
            .env("VITTE__HTTP__ADDRESS", &address)
            .output()
            .expect("vitte probe runs")
            .status
            .success()
    };
    assert!(probe("/health/live"));
    assert!(!probe("/health/nothing-here"));
    reply_in_flight(&served, &telegram, &llm, 31001).await;

    served.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.ready().await != Some(503) {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Telegram's next update is turned away, so it comes again after the restart.
    let later = text_update(3, 31002, "Eli", "en", "hello?");
    assert_eq!(served.post_update(&later).await, 503);
    assert!(
        served.child.try_wait().expect("the process").is_none(),
        "the reply in flight is waited for"
    );

    llm.release();
    let status = served.exit_within(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "exit 0 after a drain: {}",
        served.stderr()
    );
    let texts = telegram.sent_texts(31001);
    assert_eq!(
        texts.last().map(String::as_str),
        Some("echo: tell me more"),
        "the reply accepted before the signal arrived: {texts:?}"
    );
    assert!(telegram.sent_texts(31002).is_empty());
    telegram.stop().await;
    llm.stop().await;
}

#[actix_rt::test]
async fn a_second_sigterm_stops_at_once() {
    let (telegram, llm) = (FakeTelegram::start().await, FakeLlm::start().await);
    let data = tempfile::tempdir().expect("a data dir");
    let mut served = Served::start(&telegram, &llm, data.path()).await;
    reply_in_flight(&served, &telegram, &llm, 31101).await;

    served.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.ready().await != Some(503) {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.signal("TERM");
    // Far sooner than the drain's 25 s shutdown timeout, with the reply still held.
    let status = served.exit_within(Duration::from_secs(5)).await;
    assert!(!status.success(), "a drain cut short is not a clean exit");
    let stderr = served.stderr();
    assert!(stderr.contains("second termination signal"), "{stderr}");
    llm.release();
    telegram.stop().await;
    llm.stop().await;
}

#[actix_rt::test]
async fn json_logs_name_users_by_reference_never_by_id_or_words() {
    let (telegram, llm) = (FakeTelegram::start().await, FakeLlm::start().await);
    let data = tempfile::tempdir().expect("a data dir");
    let json_logs = [
        ("VITTE__LOG__FORMAT", "json"),
        ("VITTE__LOG__LEVEL", "info"),
    ];
    let mut served = Served::start_with(&telegram, &llm, data.path(), &json_logs).await;
    let user = 31_337_424;
    let start = format!("s:mira:{}", first_story("mira"));
    assert_eq!(
        served
            .post_update(&callback_update(1, user, "Dana", "en", &start))
            .await,
        200
    );
    // A refused message is logged (at info, with its rule) inside the user's session.
    let refused = text_update(2, user, "Dana", "en", "write a sexy child scene");
    assert_eq!(served.post_update(&refused).await, 200);
    let private = text_update(3, user, "Dana", "en", "my secret garden by the mill");
    assert_eq!(served.post_update(&private).await, 200);
    wait_until("both answered", || {
        (telegram.sent_texts(user).len() >= 3).then_some(())
    })
    .await;
    served.signal("TERM");
    assert!(served.exit_within(Duration::from_secs(20)).await.success());
    let logs = served.stderr();

    let reference = Command::new(env!("CARGO_BIN_EXE_vitte"))
        .args(["user-ref", &user.to_string()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VITTE_ENV", "local")
        .env("VITTE__TELEGRAM__TOKEN", "123456:TEST")
        .output()
        .expect("vitte user-ref runs");
    let reference = String::from_utf8_lossy(&reference.stdout).trim().to_owned();
    assert_eq!(reference.len(), 12, "{reference}");
    let refusal_line = logs
        .lines()
        .find(|line| line.contains("refused by a safety rule"))
        .unwrap_or_else(|| panic!("the refusal is logged:\n{logs}"));
    let line: Value = serde_json::from_str(refusal_line).expect("a JSON line");
    assert_eq!(line["span"]["user"], reference.as_str(), "{refusal_line}");
    for secret in [
        user.to_string(),
        "sexy child".into(),
        "secret garden".into(),
        "123456:TEST".into(),
    ] {
        assert!(
            !logs.contains(&secret),
            "{secret:?} is in the logs:\n{logs}"
        );
    }
    telegram.stop().await;
    llm.stop().await;
}

/// A Sentry server as far as vitte's reports go: every envelope POSTed to it, as text.
struct FakeSentry {
    envelopes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    port: u16,
    handle: actix_web::dev::ServerHandle,
}

impl FakeSentry {
    async fn start() -> FakeSentry {
        use actix_web::{App, HttpResponse, HttpServer, web};
        let envelopes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = envelopes.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let server = HttpServer::new(move || {
            let kept = kept.clone();
            App::new().default_service(web::to(move |body: web::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock()
                        .expect("not poisoned")
                        .push(String::from_utf8_lossy(&body).into_owned());
                    HttpResponse::Ok().json(serde_json::json!({"id": "0"}))
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .expect("listening")
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeSentry {
            envelopes,
            port,
            handle,
        }
    }

    fn dsn(&self) -> String {
        format!("http://publickey@127.0.0.1:{}/42", self.port)
    }

    fn received(&self) -> Vec<String> {
        self.envelopes.lock().expect("not poisoned").clone()
    }
}

#[actix_rt::test]
async fn errors_are_reported_to_sentry_without_ids_texts_or_secrets() {
    let (telegram, llm, sentry) = (
        FakeTelegram::start().await,
        FakeLlm::start().await,
        FakeSentry::start().await,
    );
    let data = tempfile::tempdir().expect("a data dir");
    let dsn = sentry.dsn();
    let reporting = [
        ("VITTE__LOG__SENTRY_DSN", dsn.as_str()),
        // The test build's fault hook: every reply's work panics.
        ("VITTE_FAULT_SESSION_PANIC_RATE", "1.0"),
    ];
    let mut served = Served::start_with(&telegram, &llm, data.path(), &reporting).await;
    let user = 31_337_425;
    let start = format!("s:mira:{}", first_story("mira"));
    let pressed = callback_update(1, user, "Dana", "en", &start);
    assert_eq!(served.post_update(&pressed).await, 200);
    let private = text_update(2, user, "Dana", "en", "my secret garden by the mill");
    assert_eq!(served.post_update(&private).await, 200);
    let reports = wait_until("the panic reported", || {
        let received = sentry.received();
        received
            .iter()
            .any(|envelope| envelope.contains("panic"))
            .then_some(received)
    })
    .await;
    served.signal("TERM");
    assert!(served.exit_within(Duration::from_secs(20)).await.success());
    let all = reports.join("\n");
    for secret in [
        user.to_string(),
        "secret garden".into(),
        "123456:TEST".into(),
        "sk-test".into(),
    ] {
        assert!(!all.contains(&secret), "{secret:?} was reported:\n{all}");
    }
    sentry.handle.stop(false).await;
    telegram.stop().await;
    llm.stop().await;
}
