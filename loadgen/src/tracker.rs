//! What happened to every message: per-user slots updated lock-free by the fake servers, and
//! the latency samples they produce.
//!
//! Each simulated user has at most one message awaiting its reply. The message carries a tag
//! `t<user>.<seq>` that the fake LLM copies into its answer, so the fake Telegram knows which
//! message a reply belongs to: the first reply to an awaited tag is a sample, any further
//! reply to it is a duplicate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One message's timings, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// From the update's POST to the reply reaching the fake Telegram.
    pub end_to_end_us: u64,
    /// Time the fake LLM spent on the request.
    pub llm_us: u64,
    /// From the LLM's first chunk to the first text the user could see.
    pub first_visible_us: u64,
}

impl Sample {
    /// What vitte itself added: end to end minus the LLM's time.
    pub fn overhead_us(&self) -> u64 {
        self.end_to_end_us.saturating_sub(self.llm_us)
    }
}

/// One simulated user.
#[derive(Default)]
pub struct UserSlot {
    /// The sequence number awaiting a reply; 0 when none.
    awaiting: AtomicU64,
    /// Highest sequence number answered.
    answered: AtomicU64,
    sent_at_us: AtomicU64,
    llm_started_us: AtomicU64,
    llm_first_chunk_us: AtomicU64,
    first_visible_us: AtomicU64,
    greeted: AtomicBool,
    wake: Notify,
}

/// Every user's slot plus the totals.
pub struct Tracker {
    start: Instant,
    base_user_id: i64,
    users: Vec<UserSlot>,
    samples: Mutex<Vec<Sample>>,
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    /// Answered with a notice (an apology, "try again") instead of the persona's reply.
    pub notices: AtomicU64,
    pub duplicated: AtomicU64,
    pub unexpected: AtomicU64,
    /// Users whose persona greeting never arrived (counted as lost replies).
    pub greetings_missing: AtomicU64,
    pub llm_requests: AtomicU64,
    pub llm_failures: AtomicU64,
    /// Bot API calls that carry a reply: its placeholder or empty draft, its drafts and
    /// edits, its final message(s).
    pub reply_calls: AtomicU64,
    /// Of those, `sendMessageDraft` calls.
    pub draft_calls: AtomicU64,
    /// Notices by their first words, to tell an apology from a "try again".
    notice_kinds: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// What a streamed reply shows before its first text (vitte's English and Russian).
const PLACEHOLDERS: [&str; 2] = ["… typing", "… печатает"];

/// Parses a tag `t<user>.<seq>` at the start of a text.
pub fn parse_tag(text: &str) -> Option<(usize, u64)> {
    let rest = text.strip_prefix('t')?;
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (user, seq) = rest[..end].split_once('.')?;
    Some((user.parse().ok()?, seq.parse().ok()?))
}

/// A tag quoted inside a text that does not start with one (after a `«`).
fn quoted_tag(text: &str) -> Option<(usize, u64)> {
    if parse_tag(text).is_some() {
        return None;
    }
    let (_, quoted) = text.split_once('«')?;
    parse_tag(quoted)
}

pub fn tag(user: usize, seq: u64) -> String {
    format!("t{user}.{seq}")
}

impl Tracker {
    pub fn new(users: usize, base_user_id: i64) -> Tracker {
        Tracker {
            start: Instant::now(),
            base_user_id,
            users: (0..users).map(|_| UserSlot::default()).collect(),
            samples: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            notices: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            greetings_missing: AtomicU64::new(0),
            llm_requests: AtomicU64::new(0),
            llm_failures: AtomicU64::new(0),
            reply_calls: AtomicU64::new(0),
            draft_calls: AtomicU64::new(0),
            notice_kinds: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn user_id(&self, user: usize) -> i64 {
        self.base_user_id + user as i64
    }

    fn slot_of_chat(&self, chat_id: i64) -> Option<(usize, &UserSlot)> {
        let index = usize::try_from(chat_id - self.base_user_id).ok()?;
        self.users.get(index).map(|slot| (index, slot))
    }

    /// A user's message with `seq` is about to be posted.
    pub fn message_sent(&self, user: usize, seq: u64) {
        let slot = &self.users[user];
        slot.sent_at_us.store(self.now_us(), Ordering::SeqCst);
        slot.first_visible_us.store(0, Ordering::SeqCst);
        slot.awaiting.store(seq, Ordering::SeqCst);
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    /// The fake LLM received the request for a tag.
    pub fn llm_started(&self, user: usize) {
        if let Some(slot) = self.users.get(user) {
            slot.llm_started_us.store(self.now_us(), Ordering::SeqCst);
        }
        self.llm_requests.fetch_add(1, Ordering::SeqCst);
    }

    /// The fake LLM sent the first bytes of its answer for a tag.
    pub fn llm_first_chunk(&self, user: usize) {
        if let Some(slot) = self.users.get(user) {
            slot.llm_first_chunk_us
                .store(self.now_us(), Ordering::SeqCst);
        }
    }

    /// A Bot API call reached the fake Telegram with `text` (a draft's when `draft`): counted
    /// when it carries a reply (tagged, a placeholder, an empty draft, a cut-off reply).
    pub fn call_seen(&self, text: &str, draft: bool, cut: bool) {
        let for_reply = parse_tag(text).is_some()
            || PLACEHOLDERS.contains(&text)
            || (draft && text.is_empty())
            || cut;
        if for_reply {
            self.reply_calls.fetch_add(1, Ordering::Relaxed);
            if draft {
                self.draft_calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Text reached the fake Telegram (sendMessage, editMessageText or sendMessageDraft) in
    /// `chat_id`.
    /// `complete` is false for a partial (streamed) text.
    pub fn text_seen(&self, chat_id: i64, text: &str, complete: bool) {
        let Some((index, slot)) = self.slot_of_chat(chat_id) else {
            self.unexpected.fetch_add(1, Ordering::SeqCst);
            return;
        };
        let now = self.now_us();
        if PLACEHOLDERS.contains(&text) {
            // A streamed reply's placeholder: the reply itself follows as edits.
            return;
        }
        // A notice about an earlier reply quotes its start (vitte's "a restart caught my last
        // reply on its way"): it answers nothing unless that reply is the one awaited.
        if let Some((quoted_user, quoted_seq)) = quoted_tag(text) {
            if quoted_user != index || slot.awaiting.load(Ordering::SeqCst) != quoted_seq {
                return;
            }
        }
        let Some((tagged_user, seq)) = parse_tag(text) else {
            // Untagged: the persona's greeting, or a notice answering an awaited message.
            if slot.greeted.swap(true, Ordering::SeqCst) {
                let awaited = slot.awaiting.swap(0, Ordering::SeqCst);
                if awaited != 0 {
                    slot.answered.fetch_max(awaited, Ordering::SeqCst);
                    self.answered.fetch_add(1, Ordering::SeqCst);
                    self.notices.fetch_add(1, Ordering::SeqCst);
                    let kind: String = text
                        .split_whitespace()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" ");
                    *self
                        .notice_kinds
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(kind)
                        .or_default() += 1;
                }
            }
            slot.wake.notify_one();
            return;
        };
        if tagged_user != index {
            self.unexpected.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if slot.awaiting.load(Ordering::SeqCst) == seq {
            let _ =
                slot.first_visible_us
                    .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        }
        if !complete {
            return;
        }
        if slot
            .awaiting
            .compare_exchange(seq, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let sent = slot.sent_at_us.load(Ordering::SeqCst);
            let started = slot.llm_started_us.load(Ordering::SeqCst);
            let first_chunk = slot.llm_first_chunk_us.load(Ordering::SeqCst);
            let first_visible = slot
                .first_visible_us
                .load(Ordering::SeqCst)
                .max(first_chunk);
            let sample = Sample {
                end_to_end_us: now.saturating_sub(sent),
                llm_us: first_chunk.saturating_sub(started),
                first_visible_us: first_visible.saturating_sub(first_chunk),
            };
            self.samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(sample);
            slot.answered.fetch_max(seq, Ordering::SeqCst);
            self.answered.fetch_add(1, Ordering::SeqCst);
            slot.wake.notify_one();
        } else if slot.answered.load(Ordering::SeqCst) >= seq {
            self.duplicated.fetch_add(1, Ordering::SeqCst);
        } else {
            self.unexpected.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until the user was greeted, up to `timeout`.
    pub async fn wait_greeted(&self, user: usize, timeout: Duration) -> bool {
        let slot = &self.users[user];
        let deadline = tokio::time::Instant::now() + timeout;
        while !slot.greeted.load(Ordering::SeqCst) {
            if tokio::time::timeout_at(deadline, slot.wake.notified())
                .await
                .is_err()
            {
                return slot.greeted.load(Ordering::SeqCst);
            }
        }
        true
    }

    /// Waits until the user's message `seq` was answered, up to `timeout`.
    pub async fn wait_answered(&self, user: usize, seq: u64, timeout: Duration) -> bool {
        let slot = &self.users[user];
        let deadline = tokio::time::Instant::now() + timeout;
        while slot.answered.load(Ordering::SeqCst) < seq {
            if tokio::time::timeout_at(deadline, slot.wake.notified())
                .await
                .is_err()
            {
                return slot.answered.load(Ordering::SeqCst) >= seq;
            }
        }
        true
    }

    /// Whether a user has no message awaiting an answer.
    pub fn is_idle(&self, user: usize) -> bool {
        self.users[user].awaiting.load(Ordering::SeqCst) == 0
    }

    /// Messages sent and not (yet) answered.
    pub fn in_flight(&self) -> u64 {
        self.sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.answered.load(Ordering::SeqCst))
    }

    /// How many notices began with each text (its first five words).
    pub fn notice_kinds(&self) -> std::collections::BTreeMap<String, u64> {
        self.notice_kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn take_samples(&self) -> Vec<Sample> {
        std::mem::take(
            &mut *self
                .samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        assert_eq!(parse_tag(&format!("{} echo", tag(12, 7))), Some((12, 7)));
        assert_eq!(parse_tag("The lighthouse"), None);
        assert_eq!(parse_tag("t12"), None);
    }

    #[test]
    fn a_reply_is_a_sample_and_a_second_one_a_duplicate() {
        let tracker = Tracker::new(2, 1000);
        tracker.message_sent(1, 1);
        tracker.llm_started(1);
        tracker.llm_first_chunk(1);
        tracker.text_seen(1001, "t1.1 hello", true);
        tracker.text_seen(1001, "t1.1 hello", true);
        assert_eq!(tracker.answered.load(Ordering::SeqCst), 1);
        assert_eq!(tracker.duplicated.load(Ordering::SeqCst), 1);
        assert_eq!(tracker.in_flight(), 0);
        assert_eq!(tracker.take_samples().len(), 1);
    }

    #[test]
    fn an_unanswered_message_stays_in_flight() {
        let tracker = Tracker::new(1, 5);
        tracker.message_sent(0, 1);
        tracker.text_seen(5, "t0.1 partial", false);
        assert_eq!(tracker.in_flight(), 1);
        let greeted = Tracker::new(1, 5);
        greeted.text_seen(5, "Welcome!", true);
        greeted.message_sent(0, 1);
        assert_eq!(
            greeted.in_flight(),
            1,
            "the greeting came before the message"
        );
        greeted.text_seen(5, "Sorry, try again", true);
        assert_eq!(
            greeted.in_flight(),
            0,
            "a notice answers the awaited message"
        );
        assert_eq!(greeted.notices.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_notice_quoting_an_answered_reply_answers_nothing_and_one_quoting_the_awaited_does() {
        let tracker = Tracker::new(1, 5);
        tracker.text_seen(5, "Welcome!", true);
        tracker.message_sent(0, 1);
        tracker.text_seen(5, "t0.1 hello", true);
        tracker.message_sent(0, 2);
        // About reply 1, which arrived: not an answer to message 2.
        tracker.text_seen(
            5,
            "A restart caught my last reply («t0.1 hello») on its way.",
            true,
        );
        tracker.text_seen(5, "t0.2 again", true);
        assert_eq!(tracker.duplicated.load(Ordering::SeqCst), 0);
        assert_eq!(tracker.notices.load(Ordering::SeqCst), 0);
        // About reply 3, still awaited: the user got a notice instead of it.
        tracker.message_sent(0, 3);
        tracker.text_seen(
            5,
            "A restart caught my last reply («t0.3 …») on its way.",
            true,
        );
        assert_eq!(tracker.notices.load(Ordering::SeqCst), 1);
        assert_eq!(tracker.answered.load(Ordering::SeqCst), 3);
    }
}
