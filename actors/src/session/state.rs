//! The session's state and what every session shares: the bottom of the session's layer,
//! importing nothing else of it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::catalogue::Feature;
use crate::domain::entitlement::{Entitlement, local_day};
use crate::domain::event::Sender;
use crate::domain::persona::{Persona, PersonaCatalog, Story};
use crate::domain::prompt::{FixedPrompt, PromptBuilder, PromptContext};
use crate::domain::safety::SafetyPolicy;
use crate::domain::texts::{Lang, fill};
use crate::memory::recall::MemoryIndex;
use crate::memory::{MemoryDeps, MemoryNews};
use crate::metrics::Metrics;
use crate::payments::{Commerce, DeskHandle};
use crate::ports::memory::StoredSummary;
use crate::ports::{
    Clock, DialogId, DialogModes, HistoryEntry, LanguageModel, Messenger, PendingDelivery,
    PendingReply, SessionStore, StoredDialog, StoredSession, UserPreferences, UserProfile,
};
use crate::scheduler::NotificationDeps;
use crate::session::drafts::DraftSupport;
use crate::supervision::Supervisor;

/// Dialog slots per user.
pub const SLOT_COUNT: u8 = 3;

/// How sessions behave; from the `[session]` and `[streaming]` configuration sections. Idle
/// timeout, mailbox capacity and restart policy come from the supervisor's `session` policy
/// (reloadable).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Messages of history kept in memory (and loaded on activation) per dialog.
    pub history_limit: usize,
    /// At most one edit of a reply being streamed per this interval (per chat: a session
    /// streams one reply at a time).
    pub edit_interval: Duration,
    /// A draft is edited only when at least this many new characters arrived.
    pub min_edit_chars: usize,
    /// At most one message-draft update per this interval (per chat), for replies streamed
    /// as Telegram message drafts.
    pub draft_interval: Duration,
    /// A draft unchanged this long is sent again, so Telegram keeps showing it (it shows
    /// one for 30 seconds).
    pub draft_refresh: Duration,
    /// Every n-th persona message of a dialog carries a "Continue" button.
    pub continue_every: u32,
    /// A dialog resumed after this long opens with a greeting that recalls the story.
    pub welcome_back_after: Duration,
    /// A user message longer than this (in characters) is refused with an explanation.
    pub max_message_chars: usize,
    /// A message still unanswered this long after it arrived (it waited through an overload
    /// or a restart) is failed visibly, with "Retry", instead of answered late.
    pub answer_within: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            history_limit: 200,
            edit_interval: Duration::from_secs(1),
            min_edit_chars: 20,
            draft_interval: Duration::from_millis(500),
            draft_refresh: Duration::from_secs(20),
            continue_every: 7,
            welcome_back_after: Duration::from_secs(6 * 3600),
            max_message_chars: 2000,
            answer_within: Duration::from_secs(10 * 60),
        }
    }
}

/// What every session needs: the ports, the personas, settings and metrics.
pub struct SessionDeps {
    pub messenger: Arc<dyn Messenger>,
    pub llm: Arc<dyn LanguageModel>,
    pub store: Arc<dyn SessionStore>,
    pub personas: Arc<PersonaCatalog>,
    pub prompts: PromptBuilder,
    pub safety: Arc<SafetyPolicy>,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    pub settings: SessionSettings,
    /// Whether replies stream as message drafts (and the drafts' ids).
    pub drafts: DraftSupport,
    /// The time of day (stored times, idle timeouts, welcome-back greetings).
    pub clock: Arc<dyn Clock>,
    /// Events accepted by sessions and not finished yet (for draining at shutdown).
    pub in_flight: AtomicUsize,
    /// The catalogue, the limits, invoices.
    pub commerce: Commerce,
    /// The payment desk (the renewal switch of /status).
    pub desk: DeskHandle,
    /// Long-term memory: the keeper, recall's embeddings, the settings.
    pub memory: MemoryDeps,
    /// The scheduler (recaps, reminders, milestones, /report) and notification settings.
    pub notifications: NotificationDeps,
    /// Registrations and crashes are recorded there.
    pub events: Arc<dyn crate::ports::EventLog>,
}

/// The session's in-memory state. It is owned by the work in progress while an event is
/// handled, and by the actor in between.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub(crate) profile: Option<UserProfile>,
    pub(crate) preferences: UserPreferences,
    /// Slot n lives at index n - 1.
    pub(crate) slots: [Option<Dialog>; SLOT_COUNT as usize],
    pub(crate) active_slot: Option<u8>,
    /// What a crash left unfinished, found on loading, each with its dialog's slot: the
    /// session finishes (or visibly fails) it before anything else.
    pub(crate) unfinished: Vec<(u8, Unfinished)>,
    /// What the user has bought (loaded on activation, then kept current by the payment
    /// desk): checked before every LLM call without a database round trip.
    pub(crate) entitlement: Entitlement,
    /// Replies written today, for the daily limit.
    pub(crate) usage: Usage,
    /// The user's memories with their vectors, loaded on the first recall and dropped when
    /// the keeper changes them.
    pub(crate) memories: Option<MemoryIndex>,
}

/// Replies written on one local day (days since 1970-01-01 in the limits' time zone).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) day: i64,
    pub(crate) replies: u32,
}

/// Something a crash left half done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// A user message whose reply was being written.
    Reply(PendingReply),
    /// A persona reply stored, and perhaps not shown in full.
    Delivery(PendingDelivery),
}

/// One slot's dialog: a persona playing a story.
#[derive(Debug)]
pub(crate) struct Dialog {
    pub(crate) id: DialogId,
    pub(crate) slot: u8,
    pub(crate) persona: Arc<Persona>,
    pub(crate) story: Story,
    pub(crate) modes: DialogModes,
    /// The fixed part of every prompt, built on the dialog's first reply (a session
    /// activates with three slots but usually writes in one) and again after the modes
    /// change.
    prompt: Option<FixedPrompt>,
    /// Oldest first; at most `history_limit` entries.
    pub(crate) history: VecDeque<HistoryEntry>,
    /// Unix milliseconds of the last message.
    pub(crate) last_active_at: i64,
    pub(crate) persona_messages: u32,
    /// Facts were extracted (or asked for) from messages up to this one.
    pub(crate) extracted_through: i64,
    /// The summary standing in for the history's earlier part.
    pub(crate) summary: Option<StoredSummary>,
    /// A summary was asked for up to this message (not asked again meanwhile).
    pub(crate) summary_asked_through: i64,
    /// What recall found for the reply about to be written (taken by it).
    pub(crate) recalled: String,
}

impl Dialog {
    /// Puts the reply being regenerated back as the dialog's last word (its replacement
    /// did not take its place).
    pub(crate) fn restore(&mut self, previous: HistoryEntry) {
        self.history.push_back(previous);
        self.persona_messages += 1;
    }

    /// A dialog just opened in `slot`, with no history yet.
    pub(crate) fn opened(
        id: DialogId,
        slot: u8,
        persona: Arc<Persona>,
        story: Story,
        modes: DialogModes,
        now: i64,
    ) -> Dialog {
        Dialog {
            id,
            slot,
            persona,
            story,
            modes,
            prompt: None,
            history: VecDeque::new(),
            last_active_at: now,
            persona_messages: 0,
            extracted_through: 0,
            summary: None,
            summary_asked_through: 0,
            recalled: String::new(),
        }
    }

    /// A stored dialog's in-memory state; `None` when its persona (file removed) is gone.
    pub(crate) fn from_stored(personas: &PersonaCatalog, stored: StoredDialog) -> Option<Dialog> {
        let persona = personas.get(&stored.persona_id)?;
        // A story removed from the file (or a dialog from before stories) plays the first.
        let story = stored
            .story_id
            .as_deref()
            .and_then(|id| persona.story(id))
            .or_else(|| persona.stories.first())?
            .clone();
        Some(Dialog {
            id: stored.dialog_id,
            slot: stored.slot,
            persona,
            story,
            modes: stored.modes,
            prompt: None,
            history: stored.history.into(),
            last_active_at: stored.last_active_at,
            persona_messages: stored.persona_messages,
            extracted_through: stored.extracted_through,
            summary_asked_through: stored
                .summary
                .as_ref()
                .map_or(0, |summary| summary.through_message_id),
            summary: stored.summary,
            recalled: String::new(),
        })
    }

    /// What a request is built from: the fixed part of the prompt (built on first use), the
    /// summary of the story's earlier part, and the history after it, oldest first.
    pub(crate) fn prompt_parts(
        &mut self,
        prompts: &PromptBuilder,
        user_name: &str,
    ) -> (&FixedPrompt, Option<&StoredSummary>, &[HistoryEntry]) {
        let (persona, story, modes) = (&self.persona, &self.story, self.modes);
        let prompt = self.prompt.get_or_insert_with(|| {
            prompts.fixed_prompt(&PromptContext {
                persona,
                story,
                user_name,
                modes,
            })
        });
        let history = self.history.make_contiguous();
        let start = self.summary.as_ref().map_or(0, |summary| {
            history
                .iter()
                .position(|entry| entry.message_id > summary.through_message_id)
                .unwrap_or(history.len())
        });
        (prompt, self.summary.as_ref(), &history[start..])
    }

    /// `template` with the dialog's `{slot}`, `{persona}` and `{story}` (its title in `lang`)
    /// filled in.
    pub(crate) fn describe(&self, template: &str, lang: Lang) -> String {
        fill(
            template,
            &[
                ("slot", &self.slot.to_string()),
                ("persona", &self.persona.name),
                ("story", self.story.title_in(lang)),
            ],
        )
    }

    /// How long the user has been away from this dialog, when it is longer than `after`
    /// (time for the persona to greet them back).
    pub(crate) fn away_longer_than(&self, after: Duration, now: i64) -> Option<i64> {
        let away_ms = now - self.last_active_at;
        (away_ms > crate::ports::clock::millis(after)).then_some(away_ms)
    }

    /// Changes the dialog's modes; its prompt is built anew on the next reply.
    pub(crate) fn set_modes(&mut self, modes: DialogModes) {
        self.modes = modes;
        self.prompt = None;
    }
}

impl SessionState {
    /// The state a session resumes with; empty for a user never seen before.
    pub(crate) fn from_stored(
        stored: Option<StoredSession>,
        personas: &PersonaCatalog,
    ) -> SessionState {
        let Some(stored) = stored else {
            return SessionState::default();
        };
        let mut state = SessionState {
            preferences: stored.preferences,
            active_slot: stored.active_slot,
            ..SessionState::default()
        };
        for dialog in stored.dialogs {
            let index = usize::from(dialog.slot).wrapping_sub(1);
            if index >= state.slots.len() {
                continue;
            }
            let slot = dialog.slot;
            let deliveries = dialog.undelivered.iter().cloned().map(Unfinished::Delivery);
            let replies = dialog.pending.iter().cloned().map(Unfinished::Reply);
            state.unfinished.extend(
                deliveries
                    .chain(replies)
                    .map(|unfinished| (slot, unfinished)),
            );
            // A dialog whose persona file was removed cannot go on; the slot shows empty.
            state.slots[index] = Dialog::from_stored(personas, dialog);
        }
        state.profile = Some(stored.profile);
        state
    }

    /// Takes a new entitlement: the modes of features no longer unlocked (a refund) are
    /// switched off in every dialog.
    pub(crate) fn apply_entitlement(&mut self, entitlement: Entitlement) {
        self.entitlement = entitlement;
        for dialog in self.slots.iter_mut().flatten() {
            let allowed = allowed_modes(dialog.modes, &self.entitlement);
            if allowed != dialog.modes {
                dialog.set_modes(allowed);
            }
        }
    }

    /// Takes what the memory keeper changed: stale cached memories are dropped (loaded again
    /// on the next recall); a dialog's newer summary replaces its old one.
    pub(crate) fn apply_memory_news(&mut self, news: MemoryNews) {
        match news {
            MemoryNews::Memories => self.memories = None,
            MemoryNews::Summary(summary) => {
                let dialog = self
                    .slots
                    .iter_mut()
                    .flatten()
                    .find(|dialog| dialog.id == summary.dialog_id);
                if let Some(dialog) = dialog {
                    let newer = dialog.summary.as_ref().is_none_or(|current| {
                        current.through_message_id < summary.through_message_id
                    });
                    if newer {
                        dialog.summary = Some(summary);
                    }
                }
            }
        }
    }

    /// Replies written today (`now` in `zone`): the count starts over at local midnight.
    pub(crate) fn replies_today(&mut self, now: i64, zone: chrono_tz::Tz) -> u32 {
        let day = local_day(now, zone);
        if self.usage.day != day {
            self.usage = Usage { day, replies: 0 };
        }
        self.usage.replies
    }

    /// The language the bot speaks to this user: the one chosen with /language, else the
    /// one Telegram reports.
    pub(crate) fn lang(&self, sender: &Sender) -> Lang {
        self.preferences
            .language
            .as_deref()
            .and_then(Lang::parse)
            .unwrap_or_else(|| Lang::from_telegram(sender.language_code.as_deref()))
    }

    pub(crate) fn slot(&self, slot: u8) -> Option<&Dialog> {
        self.slots
            .get(usize::from(slot).wrapping_sub(1))
            .and_then(Option::as_ref)
    }

    pub(crate) fn slot_mut(&mut self, slot: u8) -> Option<&mut Dialog> {
        self.slots
            .get_mut(usize::from(slot).wrapping_sub(1))
            .and_then(Option::as_mut)
    }

    /// The dialog messages go to.
    pub(crate) fn active(&mut self) -> Option<&mut Dialog> {
        let slot = self.active_slot?;
        self.slot_mut(slot)
    }

    /// Puts a dialog into its slot (replacing what was there) and makes it active.
    pub(crate) fn install(&mut self, dialog: Dialog) {
        let slot = dialog.slot;
        if let Some(place) = self.slots.get_mut(usize::from(slot).wrapping_sub(1)) {
            *place = Some(dialog);
            self.active_slot = Some(slot);
        }
    }
}

/// `modes` without those whose feature is not unlocked.
pub(crate) fn allowed_modes(modes: DialogModes, entitlement: &Entitlement) -> DialogModes {
    DialogModes {
        intense_mode: modes.intense_mode && entitlement.has(Feature::IntenseMode),
        fantasy_scenes: modes.fantasy_scenes && entitlement.has(Feature::FantasyScenes),
    }
}

/// What a session's recovery does once its state is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The session was (re)activated: replies a crash of the process left unfinished are
    /// written now when still young enough, else visibly failed.
    AfterRestart,
    /// This session's own work panicked: unfinished replies are not tried again (the same
    /// panic could follow) but show the apology with "Retry"; with none, the apology goes
    /// to `apology_to` (chat, text) as a message of its own.
    AfterCrash {
        apology_to: Option<(crate::ports::ChatId, &'static str)>,
    },
}

/// The reply being written for the event in progress, shared between the session actor and
/// its work so that /stop can cancel it without waiting in the queue.
#[derive(Debug, Default)]
pub(crate) struct Generation {
    pub(crate) cancel: CancellationToken,
    /// Set once the event started writing a reply (a /stop that came before saw nothing
    /// being written yet; the reply then stops at once).
    wrote_reply: AtomicBool,
    /// Set when the event's work is done.
    finished: AtomicBool,
    /// Set by whoever tells the user that a /stop found nothing to stop (only one does).
    stop_answered: AtomicBool,
    /// Set once the event's update is marked handled in storage (with the message it
    /// brought), so it needs no separate write at the end.
    update_settled: AtomicBool,
    /// The message draft showing the reply being written (0: none), whose stop button
    /// stops it.
    draft_id: AtomicI64,
}

impl Generation {
    /// Marks the event's work as done.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    /// Marks that the event's update was marked handled in storage.
    pub(crate) fn settle_update(&self) {
        self.update_settled.store(true, Ordering::SeqCst);
    }

    /// Whether the event's update was marked handled in storage.
    pub(crate) fn is_update_settled(&self) -> bool {
        self.update_settled.load(Ordering::SeqCst)
    }

    /// Marks that a reply is being written (a /stop now finds something to stop).
    pub(crate) fn start_reply(&self) {
        self.wrote_reply.store(true, Ordering::SeqCst);
    }

    /// The reply being written shows as message draft `draft_id`; 0 once it no longer does.
    pub(crate) fn show_as_draft(&self, draft_id: i64) {
        self.draft_id.store(draft_id, Ordering::SeqCst);
    }

    /// Telegram's stop button was pressed on draft `draft_id`: stops the reply if that draft
    /// shows it (as /stop does). Returns whether it did; a stop for another draft (one that
    /// is finished, or unknown) changes nothing.
    pub(crate) fn stop_draft(&self, draft_id: i64) -> bool {
        let ours = draft_id != 0
            && self.draft_id.load(Ordering::SeqCst) == draft_id
            && !self.finished.load(Ordering::SeqCst);
        if ours {
            self.cancel.cancel();
        }
        ours
    }

    /// Whether the user must be told that /stop found nothing: the work is done, was asked
    /// to stop, wrote no reply, and nobody has told them yet.
    pub(crate) fn stop_found_nothing(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
            && self.cancel.is_cancelled()
            && !self.wrote_reply.load(Ordering::SeqCst)
            && !self.stop_answered.swap(true, Ordering::SeqCst)
    }
}
