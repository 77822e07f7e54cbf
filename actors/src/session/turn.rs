//! One event's turn: what every step of handling it needs.

use crate::domain::event::{ApiCall, ApiOutcome, Sender};
use crate::domain::texts::{Lang, Texts};
use crate::metrics::ErrorKind;
use crate::ports::{ChatId, Keyboard, Render, StoreError};
use crate::session::delivery::send_long;
use crate::session::state::{Generation, SessionDeps};

/// What every step of handling one event needs: the dependencies, who it is for, in which
/// language, and the reply being written (for /stop).
pub(crate) struct Turn<'a> {
    pub(crate) deps: &'a SessionDeps,
    pub(crate) sender: &'a Sender,
    pub(crate) lang: Lang,
    pub(crate) texts: &'static Texts,
    pub(crate) generation: &'a Generation,
    /// The chat API call this event came from, if it did.
    pub(crate) api: Option<&'a ApiCall>,
}

impl Turn<'_> {
    /// For an event from the chat API: how it ended (the first report counts).
    pub(crate) fn report(&self, outcome: ApiOutcome) {
        if let Some(api) = self.api {
            api.end(outcome);
        }
    }

    pub(crate) fn chat(&self) -> ChatId {
        self.sender.chat_id
    }

    /// Sends a text (split past Telegram's limit; the keyboard goes on the last part).
    pub(crate) async fn say(&self, text: &str, keyboard: Option<&Keyboard>) -> Option<i64> {
        send_long(self.deps, self.chat(), text, keyboard).await
    }

    /// Shows `text` in place of message `edit` (the one whose button was pressed), or anew
    /// when there is none or it cannot be edited.
    pub(crate) async fn show(&self, text: &str, keyboard: &Keyboard, edit: Option<i64>) {
        if let Some(message_id) = edit {
            let edited = self
                .deps
                .messenger
                .edit_text(self.chat(), message_id, text, Some(keyboard), Render::Final)
                .await;
            if edited.is_ok() {
                return;
            }
        }
        self.say(text, Some(keyboard)).await;
    }

    /// Storage refused a change the user asked for: logged with `what`, counted, and the
    /// user told that nothing changed.
    pub(crate) async fn storage_failed(&self, error: &StoreError, what: &str) {
        tracing::error!(%error, "could not store {what}");
        self.deps.metrics.count_error(ErrorKind::Storage);
        self.say(self.texts.storage_failed, None).await;
    }

    /// The wall-clock time now, in Unix milliseconds.
    pub(crate) fn now(&self) -> i64 {
        self.deps.clock.now_millis()
    }
}

/// How an event arrived.
pub(crate) struct Arrival {
    pub(crate) update_id: Option<i64>,
    pub(crate) accepted_at: Option<i64>,
    pub(crate) replayed: bool,
}
