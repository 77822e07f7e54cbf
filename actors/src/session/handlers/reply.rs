//! The persona's replies: to the user's text, and on "Retry", "Regenerate" and "Continue the
//! story".

use crate::domain::event::ApiOutcome;
use crate::domain::safety::Verdict;
use crate::domain::texts::fill;
use crate::metrics::{ErrorKind, ReplyOutcome, SafetyKind};
use crate::ports::clock::millis;
use crate::ports::{MessageStatus, Role};
use crate::session::delivery::{Extras, Recorded, record};
use crate::session::keyboards::{gallery_keyboard, retry_keyboard};
use crate::session::memory::recall_for_reply;
use crate::session::state::SessionState;
use crate::session::streaming::{Directive, open_reply, write_reply, write_reply_into};
use crate::session::turn::{Arrival, Turn};

use super::shop::{take_allowance, tell_denied};

/// A user's text: the length and safety checks, then the placeholder, then the message
/// stored (naming its update and its placeholder, pending), then the persona's reply. Any
/// failure ends in a short answer, never silence.
pub(super) async fn answer_text(
    turn: &Turn<'_>,
    state: &mut SessionState,
    text: String,
    arrival: &Arrival,
) {
    let texts = turn.texts;
    let deps = turn.deps;
    let limit = deps.settings.max_message_chars;
    if text.chars().count() > limit {
        // Not worth an LLM call or a place in the story: the user shortens it.
        deps.metrics.count_error(ErrorKind::TooLong);
        let notice = fill(texts.message_too_long, &[("limit", &limit.to_string())]);
        turn.say(&notice, None).await;
        return;
    }
    let verdict = deps.safety.check_input(&text, turn.lang);
    if verdict != Verdict::Allow {
        // Not part of the story: nothing goes to the LLM or into the dialog.
        let (kind, answer) = match verdict {
            Verdict::Crisis { message } => (SafetyKind::Crisis, message),
            Verdict::Refuse { rule, explanation } => {
                tracing::info!(rule, "message refused by a safety rule");
                (SafetyKind::Refused, explanation)
            }
            Verdict::Allow => return,
        };
        deps.metrics.count_safety(kind);
        turn.say(answer, None).await;
        return;
    }
    let Some(dialog) = state.active() else {
        turn.report(ApiOutcome::NoDialog);
        let keyboard = gallery_keyboard(deps, turn.lang);
        turn.say(texts.choose_persona_first, Some(&keyboard)).await;
        return;
    };
    if let (true, Some(update_id)) = (arrival.replayed, arrival.update_id) {
        match deps.store.is_update_stored(update_id).await {
            // Stored before the restart: its reply was finished (or failed visibly) when the
            // session loaded.
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => return turn.storage_failed(&error, "a replayed message").await,
        }
    }
    let extras = Extras {
        update_id: arrival.update_id,
        ..Extras::default()
    };
    let waited = arrival.accepted_at.map(|at| turn.now() - at);
    if waited.is_some_and(|waited| waited > millis(deps.settings.answer_within)) {
        // It waited through an overload or a restart: an answer now would come out of
        // nowhere. Kept, and failed where the user sees it.
        deps.metrics.count_reply(ReplyOutcome::Late);
        tracing::warn!(
            waited_ms = waited.unwrap_or_default(),
            "a message waited too long to be answered; failed visibly with Retry"
        );
        let late = Extras {
            status: MessageStatus::Unanswered,
            ..extras
        };
        if let Recorded::Stored(_) = record(deps, dialog, Role::User, text, late).await {
            turn.generation.settle_update();
        }
        turn.say(texts.reply_too_late, Some(&retry_keyboard(texts)))
            .await;
        return;
    }
    if let Err(denial) = take_allowance(turn, state) {
        // Kept in the story, unanswered: after an upgrade, "Retry" answers it.
        let over_limit = Extras {
            status: MessageStatus::Unanswered,
            ..extras
        };
        let Some(dialog) = state.active() else {
            return;
        };
        if let Recorded::Stored(_) = record(deps, dialog, Role::User, text, over_limit).await {
            turn.generation.settle_update();
        }
        tell_denied(turn, state, denial).await;
        return;
    }
    let Some(dialog) = state.active() else {
        return;
    };
    let away = dialog.away_longer_than(deps.settings.welcome_back_after, turn.now());
    // The placeholder first: the stored message names it, so a reply a crash cuts short is
    // finished in it. A user who blocked the bot gets no reply (and no LLM call).
    let live = match open_reply(turn, None).await {
        Ok(live) => live,
        Err(_) => {
            tracing::info!("the user has blocked the bot: the message is kept unanswered");
            let blocked = Extras {
                status: MessageStatus::Unanswered,
                ..extras
            };
            if let Recorded::Stored(_) = record(deps, dialog, Role::User, text, blocked).await {
                turn.generation.settle_update();
            }
            return;
        }
    };
    let pending = Extras {
        status: MessageStatus::Pending,
        reply_message_id: live.first_message_id(),
        ..extras
    };
    match record(deps, dialog, Role::User, text, pending).await {
        Recorded::Stored(_) => turn.generation.settle_update(),
        Recorded::Duplicate => {
            deps.metrics.duplicate_updates_total.inc();
            tracing::debug!(update_id = ?arrival.update_id, "a message of this update is stored already");
            live.discard(deps).await;
            return;
        }
        Recorded::Failed => {
            live.finish_with(deps, texts.storage_failed, None).await;
            return;
        }
    }
    // Back after a long while: the persona greets the user and recalls the story first.
    let directive = match away {
        Some(away_ms) if dialog.history.len() > 1 => Directive::ReplyAfterAbsence { away_ms },
        _ => Directive::Reply,
    };
    recall_for_reply(deps, state, turn.sender.user_id).await;
    let Some(dialog) = state.active() else {
        return;
    };
    write_reply_into(turn, dialog, directive, live).await;
}

/// The "Retry" button: asks the LLM again when the last message is the user's, unanswered.
pub(super) async fn retry_last(turn: &Turn<'_>, state: &mut SessionState) {
    let waiting = state.active().is_some_and(|dialog| {
        dialog
            .history
            .back()
            .is_some_and(|entry| entry.role == Role::User)
    });
    if waiting {
        if let Err(denial) = take_allowance(turn, state) {
            tell_denied(turn, state, denial).await;
            return;
        }
        recall_for_reply(turn.deps, state, turn.sender.user_id).await;
    }
    match state.active() {
        Some(dialog)
            if dialog
                .history
                .back()
                .is_some_and(|entry| entry.role == Role::User) =>
        {
            write_reply(turn, dialog, Directive::Reply).await;
        }
        _ => {
            turn.say(turn.texts.nothing_to_retry, None).await;
        }
    }
}

/// "Regenerate" on the last reply: a new reply is written into the same Telegram message;
/// the old one stays stored, marked replaced, once the new one is in.
pub(super) async fn regenerate(turn: &Turn<'_>, state: &mut SessionState, message_id: Option<i64>) {
    let texts = turn.texts;
    if state.active().is_some() {
        if let Err(denial) = take_allowance(turn, state) {
            tell_denied(turn, state, denial).await;
            return;
        }
        recall_for_reply(turn.deps, state, turn.sender.user_id).await;
    }
    let Some(dialog) = state.active() else {
        turn.say(texts.nothing_to_regenerate, None).await;
        return;
    };
    // Any persona message but the story's opening (it has nothing before it to answer).
    let regenerable = dialog.history.back().filter(|entry| {
        entry.role == Role::Assistant && entry.message_id != 0 && dialog.history.len() > 1
    });
    let Some(last) = regenerable else {
        turn.say(texts.nothing_to_regenerate, None).await;
        return;
    };
    if message_id.is_some() && message_id != last.telegram_message_id {
        turn.say(texts.only_last_reply, None).await;
        return;
    }
    let Some(last) = dialog.history.pop_back() else {
        return;
    };
    dialog.persona_messages = dialog.persona_messages.saturating_sub(1);
    write_reply(turn, dialog, Directive::Regenerate { previous: last }).await;
}

/// "Continue": the persona goes on with the story without the user's input.
pub(super) async fn continue_story(turn: &Turn<'_>, state: &mut SessionState) {
    if state.active().is_some() {
        if let Err(denial) = take_allowance(turn, state) {
            tell_denied(turn, state, denial).await;
            return;
        }
        recall_for_reply(turn.deps, state, turn.sender.user_id).await;
    }
    match state.active() {
        Some(dialog) => write_reply(turn, dialog, Directive::ContinueStory).await,
        None => {
            let keyboard = gallery_keyboard(turn.deps, turn.lang);
            turn.say(turn.texts.choose_persona_first, Some(&keyboard))
                .await;
        }
    }
}

/// "Show the reply" under a notice that a restart caught a reply on its way: sends the
/// stored reply (from whichever slot holds it) as it was, with its buttons.
pub(super) async fn show_stored_reply(turn: &Turn<'_>, state: &mut SessionState, message: i64) {
    let texts = turn.texts;
    let found = state.slots.iter().flatten().find_map(|dialog| {
        dialog
            .history
            .iter()
            .find(|entry| entry.message_id == message && entry.role == Role::Assistant)
            .map(|entry| (entry.content.clone(), dialog.persona_messages))
    });
    let Some((content, persona_messages)) = found else {
        turn.say(texts.reply_gone, None).await;
        return;
    };
    let keyboard = crate::session::keyboards::reply_keyboard(texts, persona_messages, 0);
    turn.say(&content, Some(&keyboard)).await;
}
