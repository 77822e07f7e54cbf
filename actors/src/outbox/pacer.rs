//! The pacing arithmetic of the outbox: when may the next call to a chat go, given Telegram's
//! limits and its flood-control answers. Pure: times are passed in (the outbox's clock).
//!
//! - **Overall**: at most `global_per_second` counted calls in any one-second window (a
//!   sliding log of the last sends, so no window ever holds more, unlike a token bucket
//!   whose burst adds to its rate), spread through the second (at least `1 s / limit`
//!   apart), so a reply arriving mid-broadcast waits one gap, not a second.
//! - **A private chat**: a token bucket of `private_burst` calls refilled at one per
//!   `private_interval`: a reply's few calls in a row (its placeholder, its last edit, its
//!   buttons) go at once; a chat sent to steadily gets one a second.
//! - **A group**: at most `group_per_minute` calls in any sixty-second window.
//! - **Flood control**: a 429 pauses its chat until `retry_after` has passed; a second chat
//!   paused while another still is means Telegram is limiting the bot as a whole, and
//!   everything pauses.

use std::collections::{HashMap, VecDeque};

use crate::ports::ChatId;
use crate::ports::clock::UnixMillis;

use super::OutboxSettings;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60_000;

/// At most `limit` events in any window of `window` milliseconds.
#[derive(Debug, Clone)]
struct SlidingWindow {
    sent: VecDeque<UnixMillis>,
}

impl SlidingWindow {
    fn new() -> SlidingWindow {
        SlidingWindow {
            sent: VecDeque::new(),
        }
    }

    fn ready_at(&self, limit: usize, window: i64, now: UnixMillis) -> UnixMillis {
        if limit == 0 {
            return UnixMillis::MAX;
        }
        if self.sent.len() < limit {
            return now;
        }
        // The `limit`-th newest send leaves the window at its time + window.
        let oldest_counted = self.sent[self.sent.len() - limit];
        (oldest_counted + window).max(now)
    }

    fn record(&mut self, limit: usize, window: i64, now: UnixMillis) {
        self.sent.push_back(now);
        while self.sent.len() > limit || self.sent.front().is_some_and(|sent| *sent + window <= now)
        {
            self.sent.pop_front();
        }
    }

    fn is_stale(&self, window: i64, now: UnixMillis) -> bool {
        self.sent.back().is_none_or(|last| *last + window <= now)
    }
}

/// A private chat's token bucket, kept as its "theoretical arrival time" (the generic cell
/// rate algorithm, exact in whole milliseconds): a call may go once `now` reaches
/// `tat - (burst - 1) × interval`, and moves `tat` one interval on.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tat: UnixMillis,
}

#[derive(Debug, Clone)]
enum Pace {
    Private(Bucket),
    Group(SlidingWindow),
}

#[derive(Debug, Clone)]
struct ChatPace {
    pace: Pace,
    paused_until: UnixMillis,
}

/// The outbox's limits and pauses; see the module documentation.
#[derive(Debug)]
pub struct Pacer {
    settings: OutboxSettings,
    global: SlidingWindow,
    global_paused_until: UnixMillis,
    chats: HashMap<ChatId, ChatPace>,
}

/// What a call costs under the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Shows nothing new (a button's acknowledgement, a deletion): only pauses apply.
    Free,
    /// A message or an edit of one.
    Message,
    /// A draft of a reply being written: a message that also leaves the chat room for the
    /// reply's final text.
    Draft,
}

/// Whether a chat is a private one (a user's id) or a group (negative ids, as Telegram's).
pub fn is_group(chat: ChatId) -> bool {
    chat < 0
}

impl Pacer {
    pub fn new(settings: OutboxSettings) -> Pacer {
        Pacer {
            settings,
            global: SlidingWindow::new(),
            global_paused_until: 0,
            chats: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &OutboxSettings {
        &self.settings
    }

    /// Takes new limits (a live reload); what was sent stays counted.
    pub fn reconfigure(&mut self, settings: OutboxSettings) {
        self.settings = settings;
    }

    fn interval(&self) -> i64 {
        crate::ports::clock::millis(self.settings.private_interval).max(1)
    }

    /// The earliest moment a call of `weight` to `chat` may go: messages (sends, edits,
    /// drafts) obey the limits; every call waits out flood-control pauses.
    pub fn ready_at(&self, chat: Option<ChatId>, weight: Weight, now: UnixMillis) -> UnixMillis {
        let counted = weight != Weight::Free;
        let mut at = now.max(self.global_paused_until);
        let chat_pace = chat.and_then(|chat| self.chats.get(&chat));
        if let Some(chat_pace) = chat_pace {
            at = at.max(chat_pace.paused_until);
        }
        if !counted {
            return at;
        }
        let global_limit = self.settings.global_per_second;
        at = at.max(self.global.ready_at(global_limit as usize, SECOND, now));
        // Spread evenly through the second rather than all at its start: a reply arriving
        // mid-broadcast waits for one gap, not for the next second.
        if let Some(last) = self.global.sent.back() {
            at = at.max(last + SECOND / i64::from(global_limit.max(1)));
        }
        match chat_pace.map(|chat_pace| &chat_pace.pace) {
            Some(Pace::Private(bucket)) => {
                let burst = i64::from(self.settings.private_burst.max(1));
                let interval = self.interval();
                let mut tolerance = (burst - 1) * interval;
                // A draft leaves one call in the bucket for the reply's final text.
                if weight == Weight::Draft && burst > 1 {
                    tolerance -= interval;
                }
                at = at.max(bucket.tat - tolerance);
            }
            Some(Pace::Group(window)) => {
                at = at.max(window.ready_at(self.settings.group_per_minute as usize, MINUTE, now));
            }
            None => {}
        }
        at
    }

    /// Records a call to `chat` going now (it must be ready: see [`Pacer::ready_at`]).
    pub fn record(&mut self, chat: Option<ChatId>, weight: Weight, now: UnixMillis) {
        if weight == Weight::Free {
            return;
        }
        self.global
            .record(self.settings.global_per_second as usize, SECOND, now);
        let Some(chat) = chat else {
            return;
        };
        let interval = self.interval();
        let group_limit = self.settings.group_per_minute as usize;
        let entry = self.chats.entry(chat).or_insert_with(|| ChatPace {
            pace: if is_group(chat) {
                Pace::Group(SlidingWindow::new())
            } else {
                Pace::Private(Bucket { tat: now })
            },
            paused_until: 0,
        });
        match &mut entry.pace {
            Pace::Private(bucket) => bucket.tat = bucket.tat.max(now) + interval,
            Pace::Group(window) => window.record(group_limit, MINUTE, now),
        }
    }

    /// Telegram answered 429 for `chat`: nothing more goes to it before `until`. Returns
    /// true if this paused everything (another chat was paused still: the bot as a whole is
    /// being limited).
    pub fn flood_wait(&mut self, chat: Option<ChatId>, until: UnixMillis, now: UnixMillis) -> bool {
        let others_paused = self
            .chats
            .iter()
            .any(|(other, pace)| Some(*other) != chat && pace.paused_until > now);
        let Some(chat) = chat.filter(|_| !others_paused) else {
            self.global_paused_until = self.global_paused_until.max(until);
            return true;
        };
        let entry = self.chats.entry(chat).or_insert_with(|| ChatPace {
            pace: if is_group(chat) {
                Pace::Group(SlidingWindow::new())
            } else {
                Pace::Private(Bucket { tat: now })
            },
            paused_until: 0,
        });
        entry.paused_until = entry.paused_until.max(until);
        false
    }

    /// Forgets chats whose limits no longer hold anything back (a broadcast to 100 000
    /// chats leaves no trace once their buckets are full again).
    pub fn forget_idle(&mut self, now: UnixMillis) {
        self.chats.retain(|_, chat_pace| {
            if chat_pace.paused_until > now {
                return true;
            }
            match &chat_pace.pace {
                Pace::Private(bucket) => bucket.tat > now,
                Pace::Group(window) => !window.is_stale(MINUTE, now),
            }
        });
    }

    /// Chats with limits in force now (for tests and the benchmark's memory figure).
    pub fn tracked_chats(&self) -> usize {
        self.chats.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> OutboxSettings {
        OutboxSettings::default()
    }

    #[test]
    fn no_second_holds_more_than_the_overall_limit() {
        let mut pacer = Pacer::new(settings());
        let mut now = 0;
        let mut sent = Vec::new();
        for chat in 1..=100 {
            now = pacer.ready_at(Some(chat), Weight::Message, now);
            pacer.record(Some(chat), Weight::Message, now);
            sent.push(now);
        }
        for (index, at) in sent.iter().enumerate() {
            let within = sent[index..].iter().filter(|t| **t < at + 1_000).count();
            assert!(within <= 30, "{within} sends in the second from {at}");
        }
        // Evenly spread: 33 ms apart, the 31st a second after the first.
        assert_eq!(sent[1], 33);
        assert_eq!(sent[30], 1_000);
        assert!((3_000..3_400).contains(&sent[99]), "{}", sent[99]);
    }

    #[test]
    fn a_private_chat_takes_a_short_burst_then_one_a_second() {
        let mut pacer = Pacer::new(settings());
        let chat = Some(7);
        let mut times = Vec::new();
        let mut now = 0;
        for _ in 0..6 {
            now = pacer.ready_at(chat, Weight::Message, now);
            pacer.record(chat, Weight::Message, now);
            times.push(now);
        }
        assert_eq!(times, vec![0, 33, 66, 1_000, 2_000, 3_000]);
        // Calls that are not messages (a button's acknowledgement) are not held back.
        assert_eq!(pacer.ready_at(chat, Weight::Free, 3_000), 3_000);
    }

    #[test]
    fn a_group_gets_twenty_a_minute() {
        let mut pacer = Pacer::new(settings());
        let group = Some(-100_123);
        let mut now = 0;
        for _ in 0..20 {
            now = pacer.ready_at(group, Weight::Message, now);
            pacer.record(group, Weight::Message, now);
        }
        assert!(now < 1_000, "twenty go at once");
        assert_eq!(pacer.ready_at(group, Weight::Message, now), 60_000);
    }

    #[test]
    fn a_flood_wait_pauses_its_chat_and_a_second_one_pauses_everything() {
        let mut pacer = Pacer::new(settings());
        assert!(!pacer.flood_wait(Some(1), 5_000, 0));
        assert_eq!(pacer.ready_at(Some(1), Weight::Free, 0), 5_000);
        assert_eq!(
            pacer.ready_at(Some(2), Weight::Message, 0),
            0,
            "other chats go on"
        );
        assert!(pacer.flood_wait(Some(2), 3_000, 100));
        assert_eq!(pacer.ready_at(Some(3), Weight::Message, 100), 3_000);
        assert_eq!(pacer.ready_at(Some(1), Weight::Message, 5_000), 5_000);
    }

    #[test]
    fn idle_chats_are_forgotten() {
        let mut pacer = Pacer::new(OutboxSettings {
            private_interval: Duration::from_secs(1),
            ..settings()
        });
        for chat in 1..=1_000 {
            pacer.record(Some(chat), Weight::Message, 0);
        }
        pacer.forget_idle(500);
        assert_eq!(pacer.tracked_chats(), 1_000);
        pacer.forget_idle(1_000);
        assert_eq!(pacer.tracked_chats(), 0);
    }
}
