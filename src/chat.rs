//! `vitte chat`: a conversation in the terminal through the same session actor, prompt
//! builder, LLM client and storage as the bot, without Telegram.

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use tokio::io::AsyncBufReadExt;
use vitte_actors::domain::event::{Inbound, InboundKind, Sender};
use vitte_actors::ports::{ChatId, DeliveryError, Keyboard, Messenger, Render, SystemClock};

use crate::config::{Purpose, Settings};
use crate::startup::Core;

/// The terminal user's id: negative, so it never collides with a Telegram user's.
const TERMINAL_USER: i64 = -1;
/// Longest wait for an answer before the prompt returns anyway.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// Prints messages to stdout and remembers the last keyboard, so a number can press a button.
/// A streamed reply is printed once, when it is final (a terminal cannot edit lines above).
struct TerminalMessenger {
    keyboard: Mutex<Option<Keyboard>>,
}

impl TerminalMessenger {
    fn print(&self, text: &str, keyboard: Option<&Keyboard>) -> Result<(), DeliveryError> {
        let mut out = std::io::stdout().lock();
        let mut printed = format!("\n{text}\n");
        if let Some(keyboard) = keyboard {
            for (index, button) in keyboard.rows.iter().flatten().enumerate() {
                printed.push_str(&format!("  [{}] {}\n", index + 1, button.label));
            }
            printed.push_str("  (type the number to press a button)\n");
        }
        out.write_all(printed.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|error| DeliveryError::Failed(error.to_string()))?;
        if let Ok(mut last) = self.keyboard.lock() {
            *last = keyboard.cloned();
        }
        Ok(())
    }
}

#[async_trait]
impl Messenger for TerminalMessenger {
    async fn send_text(
        &self,
        _chat: ChatId,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError> {
        self.print(text, keyboard)?;
        Ok(0)
    }

    async fn edit_text(
        &self,
        _chat: ChatId,
        _message_id: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        render: Render,
    ) -> Result<(), DeliveryError> {
        match render {
            Render::Draft => Ok(()),
            Render::Final => self.print(text, keyboard),
        }
    }

    async fn delete_message(&self, _chat: ChatId, _message_id: i64) -> Result<(), DeliveryError> {
        // The terminal keeps what it printed.
        Ok(())
    }

    async fn acknowledge_button(&self, _callback_id: &str) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// Runs the terminal conversation with `persona_id` until end of input.
pub async fn run(mut settings: Settings, persona_id: &str) -> anyhow::Result<()> {
    settings.validate(Purpose::Chat)?;
    // The terminal shows each message once it is whole; it has no message drafts.
    settings.streaming.mode = vitte_actors::session::StreamingMode::Edit;
    let messenger = Arc::new(TerminalMessenger {
        keyboard: Mutex::new(None),
    });
    let core = Core::start(
        &settings,
        messenger.clone(),
        Arc::new(crate::telegram::payments::NoPayments),
        None,
        Arc::new(SystemClock),
        Arc::new(SystemClock),
    )
    .await?;
    let Some(persona) = core.personas.get(persona_id) else {
        let known: Vec<&str> = core.personas.all().iter().map(|p| p.id.as_str()).collect();
        anyhow::bail!(
            "no persona {persona_id:?}; the personas are: {}",
            known.join(", ")
        );
    };
    // Every persona has at least one story (checked when the file is loaded).
    let story_id = persona
        .stories
        .first()
        .map(|story| story.id.clone())
        .unwrap_or_default();
    let sender = Sender {
        user_id: TERMINAL_USER,
        chat_id: TERMINAL_USER,
        first_name: std::env::var("USER").unwrap_or_else(|_| "You".to_owned()),
        language_code: std::env::var("LANG")
            .ok()
            .map(|lang| lang.chars().take(2).collect()),
    };
    let event = |kind| Inbound::new(None, sender.clone(), kind, core.clock.now_millis());
    let mut button_counter = 0_u64;
    let mut press = |data: String| {
        button_counter += 1;
        InboundKind::Button {
            callback_id: format!("terminal-{button_counter}"),
            data,
            message_id: None,
        }
    };
    core.router
        .route(event(press(format!("s:{persona_id}:{story_id}"))));
    wait_for_answer(&core).await;

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        print!("\n> ");
        std::io::stdout()
            .flush()
            .context("writing to the terminal")?;
        let Some(line) = lines.next_line().await.context("reading the terminal")? else {
            break;
        };
        let line = line.trim().to_owned();
        if line.is_empty() {
            continue;
        }
        let pressed = line.parse::<usize>().ok().and_then(|number| {
            let keyboard = messenger.keyboard.lock().ok()?.clone()?;
            let button = keyboard
                .rows
                .into_iter()
                .flatten()
                .nth(number.checked_sub(1)?)?;
            Some(button.data)
        });
        let kind = match pressed {
            Some(data) => press(data),
            None => InboundKind::from_text(&line),
        };
        core.router.route(event(kind));
        wait_for_answer(&core).await;
    }
    core.router.stop();
    Ok(())
}

/// Waits until the session has finished the event (its whole answer is printed). After
/// [`ANSWER_WAIT`] the prompt returns anyway; a late answer is still printed when it comes.
async fn wait_for_answer(core: &Core) {
    core.router.drain(ANSWER_WAIT).await;
}
