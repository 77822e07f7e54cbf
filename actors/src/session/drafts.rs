//! Which replies stream as Telegram message drafts, and which as edits of a placeholder.
//!
//! Since Bot API 9.5 a bot may stream a reply into a private chat with `sendMessageDraft`:
//! Telegram animates it, shows "Thinking…" until text comes, and (since 10.3) a stop button.
//! Group chats have no drafts, and a self-hosted or older Bot API server may not know the
//! method: there replies are edited into a placeholder as before.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use crate::ports::ChatId;

/// How replies stream into Telegram (`streaming.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamingMode {
    /// Drafts in private chats until the Bot API server turns the method away, then edits
    /// for the rest of the process.
    #[default]
    Auto,
    /// Drafts in private chats; a reply whose draft is turned away is edited instead (the
    /// next one tries a draft again).
    Draft,
    /// A placeholder message edited as the text arrives, everywhere.
    Edit,
}

/// The process's choice between drafts and edits, and its draft ids.
#[derive(Debug)]
pub struct DraftSupport {
    mode: StreamingMode,
    /// Set (in `auto`) once the Bot API server answered that it has no `sendMessageDraft`.
    server_lacks_drafts: AtomicBool,
    /// The next draft id. Seeded from the time of start-up, so a stop button pressed on a
    /// draft of an earlier run never matches a reply of this one.
    next_id: AtomicI64,
}

impl DraftSupport {
    /// Drafts as `mode` says, with ids counting up from `first_id` (kept at least 1: Telegram
    /// refuses a zero `draft_id`).
    pub fn new(mode: StreamingMode, first_id: i64) -> DraftSupport {
        DraftSupport {
            mode,
            server_lacks_drafts: AtomicBool::new(false),
            next_id: AtomicI64::new(first_id.max(1)),
        }
    }

    /// Whether a reply to `chat` streams as a draft: only in private chats (a user's chat id
    /// is the user's id, positive; groups' are negative), and not in `edit` mode or once
    /// `auto` found the server without drafts.
    pub fn for_chat(&self, chat: ChatId) -> bool {
        chat > 0
            && match self.mode {
                StreamingMode::Edit => false,
                StreamingMode::Draft => true,
                StreamingMode::Auto => !self.server_lacks_drafts.load(Ordering::SeqCst),
            }
    }

    /// A new draft id: non-zero, and never one this process gave out before.
    pub fn next_id(&self) -> i64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if id >= 1 {
            return id;
        }
        // Past i64::MAX (never in practice): start again from 1.
        self.next_id.store(2, Ordering::SeqCst);
        1
    }

    /// The Bot API server does not know `method`: in `auto`, every later reply is edited
    /// (said once in the log); in `draft`, only this one.
    pub fn server_lacks(&self, method: &str) {
        match self.mode {
            StreamingMode::Auto => {
                if !self.server_lacks_drafts.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        method,
                        "the Bot API server has no message drafts: replies are edited into a \
                         placeholder from now on (streaming.mode = \"auto\")"
                    );
                }
            }
            StreamingMode::Draft => tracing::warn!(
                method,
                "the Bot API server has no message drafts: this reply is edited instead \
                 (streaming.mode = \"draft\")"
            ),
            StreamingMode::Edit => {}
        }
    }
}

impl Default for DraftSupport {
    /// Edits only: what the session tests (and the terminal chat) use unless they ask.
    fn default() -> Self {
        DraftSupport::new(StreamingMode::Edit, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_are_for_private_chats_only() {
        let drafts = DraftSupport::new(StreamingMode::Auto, 1);
        assert!(drafts.for_chat(42));
        assert!(!drafts.for_chat(-100_123), "a group is edited");
        let edits = DraftSupport::new(StreamingMode::Edit, 1);
        assert!(!edits.for_chat(42));
    }

    #[test]
    fn auto_switches_to_edits_for_good_and_draft_mode_does_not() {
        let auto = DraftSupport::new(StreamingMode::Auto, 1);
        auto.server_lacks("sendMessageDraft");
        assert!(!auto.for_chat(42));
        auto.server_lacks("sendMessageDraft");
        assert!(!auto.for_chat(42));
        let forced = DraftSupport::new(StreamingMode::Draft, 1);
        forced.server_lacks("sendMessageDraft");
        assert!(forced.for_chat(42), "the next reply tries a draft again");
    }

    #[test]
    fn draft_ids_are_never_zero_and_never_repeat() {
        let drafts = DraftSupport::new(StreamingMode::Auto, 0);
        let first = drafts.next_id();
        let second = drafts.next_id();
        assert_eq!((first, second), (1, 2));
        let near_the_end = DraftSupport::new(StreamingMode::Auto, i64::MAX);
        assert_eq!(near_the_end.next_id(), i64::MAX);
        assert_eq!(near_the_end.next_id(), 1, "wraps to 1, never 0 or negative");
    }

    #[test]
    fn the_mode_reads_as_operators_write_it() {
        let read = |text: &str| serde_json::from_str::<StreamingMode>(text).ok();
        assert_eq!(read("\"auto\""), Some(StreamingMode::Auto));
        assert_eq!(read("\"draft\""), Some(StreamingMode::Draft));
        assert_eq!(read("\"edit\""), Some(StreamingMode::Edit));
        assert_eq!(read("\"drafts\""), None);
    }
}
