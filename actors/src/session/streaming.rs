//! Writing a persona's reply as it streams from the LLM.
//!
//! In a private chat (where the Bot API server has them, see [`super::drafts`]) the reply
//! streams as a Telegram message draft: an empty one at once (Telegram shows "Thinking…"),
//! then the text so far under the same `draft_id`, at most once per `draft_interval` and
//! only when at least `min_edit_chars` new characters came, sent again before Telegram's
//! 30-second preview would end; the draft carries Telegram's stop button. The finished reply
//! is then sent as messages of its own, which replace the draft.
//!
//! Elsewhere (groups, a server without drafts, "Regenerate", which rewrites its message) the
//! user first sees a placeholder ("… typing"), which is edited as text arrives: at most one
//! edit per `edit_interval` (the session writes one reply at a time, so this is per chat)
//! and on the same condition of new text; the final edit replaces it.
//!
//! Either way drafts are plain text; the final text carries the whole reply with Markdown
//! (plain text if Telegram rejects it) and the reply's buttons, split over several messages
//! past 4096 characters.
//!
//! A stream that breaks off after some text leaves the user what came plus a short note, and
//! the partial reply is stored as such (status `partial`); /stop does the same with its own
//! note. The output check runs on the text as it arrives: a reply it rejects is withheld
//! (stored for review, not shown and not part of the dialog).

use std::time::Duration;

use crate::domain::event::ApiOutcome;
use crate::domain::prompt::TurnContext;
use crate::domain::texts::{TELEGRAM_MESSAGE_LIMIT, excerpt, fill, split_message};
use crate::metrics::{ErrorKind, ReplyOutcome, SafetyKind};
use crate::ports::{
    ChatId, Completion, CompletionRequest, DeliveryError, HistoryEntry, Keyboard, LlmError,
    MessageStatus, Render, Role, TextSink, TokenUsage,
};
use crate::session::delivery::{
    Extras, Recorded, celebrate_milestone, delivery_status, record, send, try_send,
};
use crate::session::keyboards::{continue_story_button, reply_keyboard, retry_keyboard, row};
use crate::session::memory::summarise_if_due;
use crate::session::state::{Dialog, SessionDeps};
use crate::session::turn::Turn;

/// What the reply is for.
#[derive(Debug, Clone)]
pub(crate) enum Directive {
    /// The persona answers the user's last message.
    Reply,
    /// The persona answers the user's last message, written after `away_ms` away: it greets
    /// the user back and recalls the story first.
    ReplyAfterAbsence { away_ms: i64 },
    /// The persona goes on with the story without the user's input.
    ContinueStory,
    /// The user returns to the dialog after `away_ms`: a greeting that recalls the story.
    WelcomeBack { away_ms: i64 },
    /// A new version of the last reply (`previous`, already taken out of the history), written
    /// into the same Telegram message.
    Regenerate { previous: HistoryEntry },
}

impl Directive {
    /// The user message this reply answers: the dialog's last message when it is the
    /// user's and the reply answers it.
    fn answers(&self, dialog: &Dialog) -> Option<i64> {
        match self {
            Directive::Reply | Directive::ReplyAfterAbsence { .. } => dialog
                .history
                .back()
                .filter(|entry| entry.role == Role::User && entry.message_id != 0)
                .map(|entry| entry.message_id),
            _ => None,
        }
    }

    /// The one-off instruction that goes after the prompt, if any. For "Regenerate" it is
    /// the one the replaced reply had: none after a user's message, "go on" otherwise.
    fn instruction(&self, dialog: &Dialog, user_name: &str) -> Option<String> {
        let text = match self {
            Directive::Reply => return None,
            Directive::Regenerate { .. } => {
                let after_user = dialog
                    .history
                    .back()
                    .is_some_and(|entry| entry.role == Role::User);
                if after_user {
                    return None;
                }
                return Directive::ContinueStory.instruction(dialog, user_name);
            }
            Directive::ContinueStory => String::from(
                "{{user}} has not written anything new: continue the story as {{char}} on \
                 your own initiative. Move the scene forward with a new development and end \
                 with something {{user}} can react to.",
            ),
            Directive::ReplyAfterAbsence { away_ms } => format!(
                "{{{{user}}}} comes back to this story after about {} hours away. Begin \
                 {{{{char}}}}'s reply with a short greeting in character that recalls where \
                 the story stopped, then answer {{{{user}}}}'s message.",
                (away_ms / 3_600_000).max(1)
            ),
            Directive::WelcomeBack { away_ms } => format!(
                "{{{{user}}}} comes back to this story after about {} hours away. Write \
                 {{{{char}}}}'s greeting: welcome {{{{user}}}} back in character and, in a \
                 sentence or two, recall where the story stopped. Do not invent what \
                 {{{{user}}}} did meanwhile.",
                (away_ms / 3_600_000).max(1)
            ),
        };
        Some(dialog.persona.substitute(&text, user_name))
    }
}

/// How streaming a reply ended.
enum Ending {
    /// The LLM call finished (with the whole answer, or an error).
    Finished(Result<Completion, LlmError>),
    /// The user pressed /stop.
    Stopped,
    /// The output check rejected the text.
    Withheld,
}

/// A reply on screen: the Telegram messages it occupies and what each shows.
pub(crate) struct LiveReply {
    chat: ChatId,
    messages: Vec<(i64, String)>,
    /// When a draft was last edited in; the final edit keeps the same pace.
    last_edit: Option<tokio::time::Instant>,
    edit_interval: Duration,
    /// Telegram asked to slow down: no drafts before this (the final edit waits for it).
    throttled_until: Option<tokio::time::Instant>,
    /// The message draft the reply streams into, when it streams as one (then `messages`
    /// stays empty until the final text is sent).
    draft: Option<LiveDraft>,
    /// How long a draft may stay unchanged before it is sent again.
    draft_refresh: Duration,
}

/// A reply streaming as a Telegram message draft.
struct LiveDraft {
    id: i64,
    /// What the draft shows (empty: "Thinking…").
    shown: String,
    /// When Telegram last took it (`None`: not yet).
    sent_at: Option<tokio::time::Instant>,
}

/// Longest flood-control wait a reply honours before trying again anyway.
const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// Telegram messages that already show a reply (or its placeholder), to be written over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShownReply {
    /// The messages, in order (a long reply's parts).
    ids: Vec<i64>,
    /// What the first of them shows.
    first_part: String,
}

impl ShownReply {
    /// The messages of a stored reply ("Regenerate" writes over them).
    pub(crate) fn of(entry: &HistoryEntry) -> Option<ShownReply> {
        let mut ids = entry.earlier_parts.clone();
        ids.extend(entry.telegram_message_id);
        let first_part = split_message(&entry.content, TELEGRAM_MESSAGE_LIMIT)
            .into_iter()
            .next()
            .unwrap_or_default();
        (!ids.is_empty()).then_some(ShownReply { ids, first_part })
    }

    /// One message left showing an unfinished reply (a placeholder frozen by a crash).
    pub(crate) fn frozen(message_id: i64) -> ShownReply {
        ShownReply {
            ids: vec![message_id],
            first_part: String::new(),
        }
    }
}

impl LiveReply {
    /// Starts a reply with a placeholder: a new message, or the first message of `reuse`
    /// (its other parts are removed; a shorter or longer new reply takes the messages it
    /// needs). If Telegram refuses, the reply is sent as new messages at the end; if the user
    /// has blocked the bot, there is no reply to write (the LLM is not asked).
    async fn open(
        turn: &Turn<'_>,
        placeholder: &str,
        reuse: Option<ShownReply>,
    ) -> Result<Self, DeliveryError> {
        let deps = turn.deps;
        let chat = turn.chat();
        let mut live = LiveReply {
            chat,
            messages: Vec::new(),
            last_edit: None,
            edit_interval: deps.settings.edit_interval,
            throttled_until: None,
            draft: None,
            draft_refresh: deps.settings.draft_refresh,
        };
        // A reply written over its old messages ("Regenerate", a placeholder a restart
        // froze) keeps to them.
        if reuse.is_none() && deps.drafts.for_chat(chat) && live.open_draft(turn).await? {
            return Ok(live);
        }
        match reuse {
            Some(ShownReply {
                ids,
                first_part: showing,
            }) => {
                let message_id = ids[0];
                for later in ids.into_iter().skip(1) {
                    if let Err(error) = deps.messenger.delete_message(chat, later).await {
                        tracing::debug!(%error, "could not remove a part of the old reply");
                    }
                }
                let edited = deps
                    .messenger
                    .edit_text(chat, message_id, placeholder, None, Render::Draft)
                    .await;
                match edited {
                    Ok(()) => live.messages.push((message_id, placeholder.to_owned())),
                    // The message is still there, showing the earlier reply: it is reused
                    // once Telegram lets us edit again.
                    Err(DeliveryError::Throttled { retry_after }) => {
                        live.throttle(retry_after);
                        live.messages.push((message_id, showing));
                    }
                    Err(DeliveryError::Blocked) => return Err(DeliveryError::Blocked),
                    Err(error) => tracing::debug!(%error, "could not reuse a message"),
                }
            }
            None => match try_send(deps, chat, placeholder, None).await {
                Ok(message_id) => live.messages.push((message_id, placeholder.to_owned())),
                Err(DeliveryError::Blocked) => return Err(DeliveryError::Blocked),
                // The final text is sent as a new message.
                Err(_) => {}
            },
        }
        Ok(live)
    }

    /// Starts the reply as an empty message draft ("Thinking…" at once, no placeholder
    /// message). Returns false when the reply must be edited into a placeholder instead:
    /// the server has no drafts, or refused this one.
    async fn open_draft(&mut self, turn: &Turn<'_>) -> Result<bool, DeliveryError> {
        let deps = turn.deps;
        let id = deps.drafts.next_id();
        // From here Telegram's stop button on this draft stops the reply.
        turn.generation.show_as_draft(id);
        let mut draft = LiveDraft {
            id,
            shown: String::new(),
            sent_at: None,
        };
        match deps.messenger.send_draft(self.chat, id, "").await {
            Ok(()) => draft.sent_at = Some(tokio::time::Instant::now()),
            Err(DeliveryError::Unsupported(method)) => {
                deps.drafts.server_lacks(method);
                turn.generation.show_as_draft(0);
                return Ok(false);
            }
            Err(DeliveryError::Failed(error)) => {
                tracing::debug!(%error, "Telegram refused a draft; editing a placeholder instead");
                turn.generation.show_as_draft(0);
                return Ok(false);
            }
            Err(DeliveryError::Blocked) => {
                turn.generation.show_as_draft(0);
                return Err(DeliveryError::Blocked);
            }
            // Shown with the next draft.
            Err(DeliveryError::Throttled { retry_after }) => self.throttle(retry_after),
            Err(error) => tracing::debug!(%error, "could not show a draft"),
        }
        self.edit_interval = deps.settings.draft_interval;
        self.draft = Some(draft);
        Ok(true)
    }

    /// Whether the reply streams as a message draft that Telegram would soon stop showing
    /// (or has not shown yet): it is sent again even without new text.
    fn draft_due_again(&self) -> bool {
        self.draft.as_ref().is_some_and(|draft| {
            draft
                .sent_at
                .is_none_or(|at| at.elapsed() >= self.draft_refresh)
        })
    }

    /// Shows `text` (with `keyboard`) instead of the reply: a notice in its place.
    pub(crate) async fn finish_with(
        mut self,
        deps: &SessionDeps,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) {
        self.show(deps, text, keyboard).await;
    }

    /// Removes the placeholder: there is no reply to write after all. (A message draft has
    /// nothing to remove: Telegram stops showing it within 30 seconds.)
    pub(crate) async fn discard(self, deps: &SessionDeps) {
        for (message_id, _) in self.messages {
            if let Err(error) = deps.messenger.delete_message(self.chat, message_id).await {
                tracing::debug!(%error, "could not remove a placeholder");
            }
        }
    }

    /// The Telegram message that shows the start of the reply.
    pub(crate) fn first_message_id(&self) -> Option<i64> {
        self.messages.first().map(|(message_id, _)| *message_id)
    }

    fn throttle(&mut self, retry_after: Duration) {
        self.throttled_until = Some(tokio::time::Instant::now() + retry_after.min(MAX_THROTTLE));
    }

    /// Shows a draft of the text so far: only in the messages the reply already has (what
    /// outgrows them waits for the final text), plain text, never waiting on flood control.
    async fn show_draft(&mut self, deps: &SessionDeps, text: &str) {
        let now = tokio::time::Instant::now();
        if self.throttled_until.is_some_and(|until| now < until) {
            // A draft can wait; the next one (or the final text) shows it all.
            return;
        }
        if self.draft.is_some() {
            return self.update_draft(deps, text).await;
        }
        self.pace().await;
        let parts = split_message(text, TELEGRAM_MESSAGE_LIMIT);
        for (part, (message_id, shown)) in parts.into_iter().zip(self.messages.iter_mut()) {
            if *shown == part {
                continue;
            }
            let edited = deps
                .messenger
                .edit_text(self.chat, *message_id, &part, None, Render::Draft)
                .await;
            match edited {
                Ok(()) => *shown = part,
                Err(DeliveryError::Throttled { retry_after }) => {
                    self.throttle(retry_after);
                    return;
                }
                Err(error) => tracing::debug!(%error, "could not edit a draft"),
            }
        }
    }

    /// Shows the part of `text` being written (past 4096 characters, the last one) in the
    /// message draft: when it changed, or to keep Telegram showing it.
    async fn update_draft(&mut self, deps: &SessionDeps, text: &str) {
        let part = split_message(text, TELEGRAM_MESSAGE_LIMIT)
            .pop()
            .unwrap_or_default();
        let unchanged = self.draft.as_ref().is_none_or(|draft| draft.shown == part);
        if unchanged && !self.draft_due_again() {
            return;
        }
        self.pace().await;
        let Some(draft) = self.draft.as_mut() else {
            return;
        };
        match deps.messenger.send_draft(self.chat, draft.id, &part).await {
            Ok(()) => {
                draft.shown = part;
                draft.sent_at = Some(tokio::time::Instant::now());
            }
            Err(DeliveryError::Throttled { retry_after }) => self.throttle(retry_after),
            Err(error) => tracing::debug!(%error, "could not update a draft"),
        }
    }

    /// At most one edit per interval per chat (the final one included), and none while
    /// Telegram asked to wait.
    async fn pace(&mut self) {
        let next_edit = self.last_edit.map(|at| at + self.edit_interval);
        if let Some(at) = next_edit.max(self.throttled_until) {
            tokio::time::sleep_until(at).await;
        }
        self.last_edit = Some(tokio::time::Instant::now());
    }

    /// Shows the final text: every part edited in with Markdown (sent as a new message when
    /// an edit fails, and new messages where the reply outgrew its messages), the keyboard on
    /// the last part, and messages left over from a longer draft removed. Returns whether
    /// every part reached the user.
    async fn show(&mut self, deps: &SessionDeps, text: &str, keyboard: Option<&Keyboard>) -> bool {
        let parts = split_message(text, TELEGRAM_MESSAGE_LIMIT);
        let count = parts.len();
        let mut delivered = true;
        if self.draft.take().is_some() {
            // New messages, which replace the draft: they keep to Telegram's flood control
            // only (the outbox leaves them room in the chat's budget).
            if let Some(until) = self.throttled_until {
                tokio::time::sleep_until(until).await;
            }
        } else {
            self.pace().await;
        }
        for (index, part) in parts.into_iter().enumerate() {
            let keyboard = if index + 1 == count { keyboard } else { None };
            match self.messages.get_mut(index) {
                Some((message_id, shown)) => {
                    let edited = deps
                        .messenger
                        .edit_text(self.chat, *message_id, &part, keyboard, Render::Final)
                        .await;
                    match edited {
                        Ok(()) => *shown = part,
                        // The edit may have been applied: a new message could show the reply
                        // twice. It is left as it is (most likely showing the final text).
                        Err(DeliveryError::MaybeDelivered(error)) => {
                            tracing::warn!(%error, "a reply's final edit may not have arrived");
                            deps.metrics.count_error(ErrorKind::Telegram);
                            *shown = part;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "could not edit a reply");
                            deps.metrics.count_error(ErrorKind::Telegram);
                            // Refused for sure: the final text must arrive, as a new message,
                            // and the draft it replaces goes (if Telegram lets us).
                            match send(deps, self.chat, &part, keyboard).await {
                                Some(new_id) => {
                                    let draft = std::mem::replace(message_id, new_id);
                                    *shown = part;
                                    let removed =
                                        deps.messenger.delete_message(self.chat, draft).await;
                                    if let Err(error) = removed {
                                        tracing::debug!(%error, "could not remove a draft");
                                    }
                                }
                                None => delivered = false,
                            }
                        }
                    }
                }
                None => match send(deps, self.chat, &part, keyboard).await {
                    Some(message_id) => self.messages.push((message_id, part)),
                    None => delivered = false,
                },
            }
        }
        for (message_id, _) in self.messages.drain(count.min(self.messages.len())..) {
            if let Err(error) = deps.messenger.delete_message(self.chat, message_id).await {
                tracing::debug!(%error, "could not remove a leftover part");
            }
        }
        delivered
    }

    /// The Telegram message that shows the end of the reply (and its buttons).
    fn last_message_id(&self) -> Option<i64> {
        self.messages.last().map(|(message_id, _)| *message_id)
    }

    /// The messages of the reply's other parts, in order.
    fn earlier_parts(&self) -> Vec<i64> {
        let count = self.messages.len().saturating_sub(1);
        self.messages[..count].iter().map(|(id, _)| *id).collect()
    }
}

/// Shows the placeholder of a reply about to be written (over `reuse` if given). From here
/// /stop finds a reply being written. `Err(Blocked)`: the user has blocked the bot.
pub(crate) async fn open_reply(
    turn: &Turn<'_>,
    reuse: Option<ShownReply>,
) -> Result<LiveReply, DeliveryError> {
    // /stop may come while the placeholder is still on its way.
    turn.generation.start_reply();
    LiveReply::open(turn, turn.texts.typing, reuse).await
}

/// Writes the persona's next message for `directive`: streams it into a placeholder, then
/// stores it (complete, partial or withheld) with its token usage. Any failure ends in a
/// short notice, never silence.
pub(crate) async fn write_reply(turn: &Turn<'_>, dialog: &mut Dialog, directive: Directive) {
    let reuse = match &directive {
        Directive::Regenerate { previous } => ShownReply::of(previous),
        _ => None,
    };
    match open_reply(turn, reuse).await {
        Ok(live) => write_reply_into(turn, dialog, directive, live).await,
        Err(_) => blocked(turn, dialog, &directive).await,
    }
}

/// The user has blocked the bot: nothing is written (no LLM call is paid for); a message
/// waiting for this reply stays unanswered, and a regenerated reply keeps its place.
async fn blocked(turn: &Turn<'_>, dialog: &mut Dialog, directive: &Directive) {
    tracing::info!("the user has blocked the bot: no reply is written");
    if let Directive::Regenerate { previous } = directive {
        dialog.restore(previous.clone());
    }
    settle(turn, directive.answers(dialog), MessageStatus::Unanswered).await;
}

/// Stores how a user message's reply ended (`Complete` or `Unanswered`), if the reply
/// answered one.
async fn settle(turn: &Turn<'_>, message_id: Option<i64>, status: MessageStatus) {
    let Some(message_id) = message_id else {
        return;
    };
    if let Err(error) = turn.deps.store.set_status(message_id, status).await {
        tracing::warn!(%error, "could not store how a reply ended");
        turn.deps.metrics.count_error(ErrorKind::Storage);
    }
}

/// [`write_reply`] into a reply whose placeholder is on screen already.
pub(crate) async fn write_reply_into(
    turn: &Turn<'_>,
    dialog: &mut Dialog,
    directive: Directive,
    mut live: LiveReply,
) {
    #[cfg(feature = "fault-injection")]
    crate::faults::maybe_panic_in_reply();
    let deps = turn.deps;
    let texts = turn.texts;
    let answering = directive.answers(dialog);
    let instruction = directive.instruction(dialog, &turn.sender.first_name);
    let recalled = std::mem::take(&mut dialog.recalled);
    let (fixed, summary, history) = dialog.prompt_parts(&deps.prompts, &turn.sender.first_name);
    let context = TurnContext {
        memory: &recalled,
        summary: summary.map(|summary| (summary.text.as_str(), summary.token_count)),
        directive: instruction.as_deref(),
    };
    let prompt = deps.prompts.build_turn(fixed, &context, history);
    summarise_if_due(
        deps,
        dialog,
        turn.sender.user_id,
        &turn.sender.first_name,
        prompt.left_out,
    );
    let prompt_estimate = prompt.estimated_tokens;
    let (sink, pieces) = TextSink::channel();
    let mut request = CompletionRequest::companion(prompt.messages, turn.sender.user_id);
    request.stream = Some(sink);

    let (streamed, ending) = stream(turn, &mut live, request, pieces).await;
    // The draft's stop button has nothing left to stop.
    turn.generation.show_as_draft(0);

    let number = dialog.persona_messages + 1;
    let keyboard = reply_keyboard(texts, number, deps.settings.continue_every);
    // The reply's tokens are counted once: for storage, and as the estimate of its usage
    // when the provider reports none (streamed answers usually do not).
    let usage = |completion: Option<&Completion>, reply_tokens: u32| {
        let prompt_tokens = completion
            .and_then(|completion| completion.prompt_tokens)
            .unwrap_or(prompt_estimate);
        let completion_tokens = completion
            .and_then(|completion| completion.completion_tokens)
            .unwrap_or(reply_tokens);
        deps.metrics
            .ai_tokens_used_total
            .with_label_values(&["prompt"])
            .inc_by(u64::from(prompt_tokens));
        deps.metrics
            .ai_tokens_used_total
            .with_label_values(&["completion"])
            .inc_by(u64::from(completion_tokens));
        TokenUsage {
            user_id: turn.sender.user_id,
            slot: dialog.slot,
            prompt_tokens,
            completion_tokens,
        }
    };

    let reply = match ending {
        Ending::Finished(Ok(completion)) if !completion.text.trim().is_empty() => {
            let text = completion.text.trim().to_owned();
            if !deps.safety.output_allowed(&text) {
                // Stored first, so what the user sees is already what storage says.
                settle(turn, answering, MessageStatus::Unanswered).await;
                return withhold(turn, dialog, &mut live, text, &directive).await;
            }
            let tokens = deps.prompts.counter().count(&text);
            FinishedReply {
                usage: usage(Some(&completion), tokens),
                tokens,
                provider: Some(completion.provider),
                text,
                status: MessageStatus::Complete,
                outcome: ReplyOutcome::Complete,
                note: None,
            }
        }
        Ending::Withheld => {
            settle(turn, answering, MessageStatus::Unanswered).await;
            return withhold(turn, dialog, &mut live, streamed, &directive).await;
        }
        // Cut short after some text: the user keeps what came, with a note.
        Ending::Stopped | Ending::Finished(Err(_)) if !streamed.trim().is_empty() => {
            let (outcome, note) = match &ending {
                Ending::Finished(Err(error)) => {
                    tracing::warn!(%error, "the reply broke off");
                    deps.metrics.count_error(ErrorKind::Llm);
                    (ReplyOutcome::Partial, texts.reply_cut_off)
                }
                _ => (ReplyOutcome::Stopped, texts.reply_stopped),
            };
            let text = streamed.trim().to_owned();
            let tokens = deps.prompts.counter().count(&text);
            FinishedReply {
                usage: usage(None, tokens),
                tokens,
                provider: None,
                text,
                status: MessageStatus::Partial,
                outcome,
                note: Some(note),
            }
        }
        Ending::Stopped => {
            deps.metrics.count_reply(ReplyOutcome::Stopped);
            // The user stopped it: their message is answered by that.
            settle(turn, answering, MessageStatus::Complete).await;
            return restore_or_notice(turn, dialog, &mut live, &directive, texts.reply_stopped)
                .await;
        }
        Ending::Finished(result) => {
            settle(turn, answering, MessageStatus::Unanswered).await;
            return fail(turn, dialog, &mut live, &directive, result.err()).await;
        }
    };
    let FinishedReply {
        text,
        tokens,
        status,
        outcome,
        provider,
        note,
        usage,
    } = reply;
    let shown = match note {
        Some(note) => format!("{text}\n\n{note}"),
        None => text.clone(),
    };
    let replaces = match &directive {
        Directive::Regenerate { previous } => Some(previous.message_id),
        _ => None,
    };
    // Stored before it is shown in full (as `Delivering`): should the process stop while
    // Telegram gets it, recovery shows this same text again, never a different one.
    let extras = Extras {
        status: MessageStatus::Delivering,
        telegram_message_id: live.first_message_id(),
        provider,
        usage: Some(usage),
        replaces,
        answers: answering,
        token_count: Some(tokens),
        ..Extras::default()
    };
    let recorded = record(deps, dialog, Role::Assistant, text, extras).await;
    if let (Directive::Regenerate { previous }, Recorded::Failed) = (&directive, recorded) {
        // Storage still has the earlier reply as the dialog's last word; so does memory.
        dialog.restore(previous.clone());
    }
    let delivered = live.show(deps, &shown, Some(&keyboard)).await;
    deps.metrics.count_reply(outcome);
    if let (
        Recorded::Stored(_),
        Directive::Reply | Directive::ReplyAfterAbsence { .. } | Directive::ContinueStory,
    ) = (recorded, &directive)
    {
        celebrate_milestone(deps, turn.sender.user_id, dialog);
    }
    if let Recorded::Stored(message_id) = recorded {
        let status = if delivered {
            status
        } else {
            delivery_status(None)
        };
        finish_delivery(turn, dialog, message_id, status, &live).await;
    }
}

/// Marks a stored reply shown, with the messages it occupies (in storage and in memory).
async fn finish_delivery(
    turn: &Turn<'_>,
    dialog: &mut Dialog,
    message_id: i64,
    status: MessageStatus,
    live: &LiveReply,
) {
    let (last, earlier) = (live.last_message_id(), live.earlier_parts());
    if let Err(error) = turn
        .deps
        .store
        .finish_delivery(message_id, status, last, &earlier)
        .await
    {
        // Recovery shows it again after a restart: an edit that changes nothing.
        tracing::warn!(%error, "could not mark a reply shown");
        turn.deps.metrics.count_error(ErrorKind::Storage);
    }
    if let Some(entry) = dialog
        .history
        .iter_mut()
        .rev()
        .find(|entry| entry.message_id == message_id)
    {
        entry.telegram_message_id = last;
        entry.earlier_parts = earlier;
    }
}

/// A reply that has text to show and store.
struct FinishedReply {
    text: String,
    status: MessageStatus,
    outcome: ReplyOutcome,
    provider: Option<String>,
    /// Shown under a cut-short reply (not stored).
    note: Option<&'static str>,
    /// Tokens of `text`.
    tokens: u32,
    usage: TokenUsage,
}

/// Streams the LLM's answer into `live` until it ends, the user stops it, or the output
/// check rejects it. Returns the text that arrived and how it ended.
async fn stream(
    turn: &Turn<'_>,
    live: &mut LiveReply,
    request: CompletionRequest,
    mut pieces: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> (String, Ending) {
    let deps = turn.deps;
    let settings = &deps.settings;
    let completion = deps.llm.complete(request);
    tokio::pin!(completion);
    let interval = live.edit_interval.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut text = String::new();
    let mut shown_chars = 0;
    let mut output_check = deps.safety.output_scan();
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            () = turn.generation.cancel.cancelled() => return (text, Ending::Stopped),
            result = &mut completion => {
                while let Ok(piece) = pieces.try_recv() {
                    text.push_str(&piece);
                }
                if !deps.safety.output_allowed(&text) {
                    return (text, Ending::Withheld);
                }
                return (text, Ending::Finished(result));
            }
            Some(piece) = pieces.recv() => {
                if text.is_empty() {
                    deps.metrics
                        .ai_time_to_first_token_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                text.push_str(&piece);
                if !output_check.allows(&text) {
                    return (text, Ending::Withheld);
                }
            }
            _ = ticker.tick() => {
                let chars = text.chars().count();
                let enough_new = chars >= shown_chars + settings.min_edit_chars.max(1);
                if enough_new || live.draft_due_again() {
                    // /stop must not wait for Telegram; an edit cut short changes nothing.
                    tokio::select! {
                        biased;
                        () = turn.generation.cancel.cancelled() => {
                            return (text, Ending::Stopped);
                        }
                        () = live.show_draft(deps, text.trim()) => {}
                    }
                    shown_chars = chars;
                }
            }
        }
    }
}

/// The output check rejected the reply: the user sees a notice instead (a regenerated reply
/// shows the earlier version again), and the text is stored as withheld, outside the dialog.
async fn withhold(
    turn: &Turn<'_>,
    dialog: &mut Dialog,
    live: &mut LiveReply,
    text: String,
    directive: &Directive,
) {
    let deps = turn.deps;
    let texts = turn.texts;
    deps.metrics.count_safety(SafetyKind::OutputWithheld);
    deps.metrics.count_reply(ReplyOutcome::Withheld);
    tracing::info!("a reply was withheld by the output check");
    match directive {
        Directive::Regenerate { .. } => {
            restore_or_notice(turn, dialog, live, directive, texts.reply_withheld).await;
        }
        // The user's message stays unanswered: "Retry" asks again.
        Directive::Reply | Directive::ReplyAfterAbsence { .. } => {
            live.show(deps, texts.reply_withheld, Some(&retry_keyboard(texts)))
                .await;
        }
        // Nothing to retry: the persona may try going on again.
        Directive::ContinueStory | Directive::WelcomeBack { .. } => {
            let keyboard = row(vec![continue_story_button(texts)]);
            live.show(deps, texts.reply_withheld, Some(&keyboard)).await;
        }
    }
    let extras = Extras {
        status: MessageStatus::Withheld,
        ..Extras::default()
    };
    record(deps, dialog, Role::Assistant, text, extras).await;
}

/// Nothing usable came: for a regenerated reply the previous one is shown again (and
/// `notice` as a message of its own, unless the user stopped it); otherwise the placeholder
/// becomes `notice`.
async fn restore_or_notice(
    turn: &Turn<'_>,
    dialog: &mut Dialog,
    live: &mut LiveReply,
    directive: &Directive,
    notice: &str,
) {
    if let Directive::Regenerate { previous } = directive {
        let keyboard = reply_keyboard(turn.texts, dialog.persona_messages + 1, 0);
        live.show(turn.deps, &previous.content, Some(&keyboard))
            .await;
        dialog.restore(previous.clone());
        if notice != turn.texts.reply_stopped {
            send(turn.deps, turn.chat(), notice, None).await;
        }
        return;
    }
    live.show(turn.deps, notice, None).await;
}

/// The LLM gave nothing: the user's message is kept as unanswered with a "Retry" button; a
/// welcome back falls back to a plain one that quotes the story's last message.
async fn fail(
    turn: &Turn<'_>,
    dialog: &mut Dialog,
    live: &mut LiveReply,
    directive: &Directive,
    error: Option<LlmError>,
) {
    let deps = turn.deps;
    let texts = turn.texts;
    match &error {
        Some(error) => tracing::warn!(%error, "no LLM answer"),
        None => tracing::warn!("the LLM answered with empty text"),
    }
    deps.metrics.count_error(ErrorKind::Llm);
    deps.metrics.count_reply(ReplyOutcome::Failed);
    let notice = match &error {
        Some(LlmError::CircuitOpen { .. }) => {
            turn.report(ApiOutcome::LlmUnavailable);
            texts.llm_unavailable
        }
        Some(LlmError::RateLimited { .. }) => {
            turn.report(ApiOutcome::LlmFailed);
            deps.metrics.count_error(ErrorKind::RateLimited);
            texts.rate_limited
        }
        _ => {
            turn.report(ApiOutcome::LlmFailed);
            texts.llm_failed
        }
    };
    match directive {
        // The user's message stays unanswered (the caller stores that): "Retry" asks again.
        Directive::Reply | Directive::ReplyAfterAbsence { .. } => {
            let keyboard = retry_keyboard(texts);
            live.show(deps, notice, Some(&keyboard)).await;
        }
        Directive::WelcomeBack { .. } => {
            let last = dialog
                .history
                .iter()
                .rev()
                .find(|entry| entry.role == Role::Assistant)
                .map(|entry| excerpt(&entry.content, 200))
                .unwrap_or_default();
            let greeting = fill(
                texts.welcome_back,
                &[("name", &dialog.persona.name), ("last", &last)],
            );
            let keyboard = reply_keyboard(texts, dialog.persona_messages + 1, 0);
            let delivered = live.show(deps, &greeting, Some(&keyboard)).await;
            let extras = Extras {
                status: if delivered {
                    MessageStatus::Complete
                } else {
                    MessageStatus::Undelivered
                },
                telegram_message_id: live.last_message_id(),
                ..Extras::default()
            };
            record(deps, dialog, Role::Assistant, greeting, extras).await;
        }
        Directive::Regenerate { .. } | Directive::ContinueStory => {
            restore_or_notice(turn, dialog, live, directive, notice).await;
        }
    }
}
