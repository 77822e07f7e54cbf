//! The persona's replies: to the user's text, and on "Retry", "Regenerate" and "Continue the
//! story".

use crate::domain::safety::Verdict;
use crate::metrics::SafetyKind;
use crate::ports::Role;
use crate::session::delivery::{Extras, Recorded, claim_update, record};
use crate::session::keyboards::gallery_keyboard;
use crate::session::state::SessionState;
use crate::session::streaming::{Directive, write_reply};
use crate::session::turn::Turn;

/// A user's text: the safety check, then store it, then the persona's reply. Any failure
/// ends in a short answer, never silence. `update_id` is the update still to be claimed
/// (with the message, so a redelivery is never stored twice).
pub(super) async fn answer_text(
    turn: &Turn<'_>,
    state: &mut SessionState,
    text: String,
    update_id: Option<i64>,
) {
    let texts = turn.texts;
    let deps = turn.deps;
    let verdict = deps.safety.check_input(&text, turn.lang);
    if verdict != Verdict::Allow {
        // Not part of the story: nothing goes to the LLM or into the dialog.
        if let Some(update_id) = update_id {
            if !claim_update(deps, state, turn.sender, update_id).await {
                return;
            }
        }
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
        let keyboard = gallery_keyboard(deps, turn.lang);
        turn.say(texts.choose_persona_first, Some(&keyboard)).await;
        return;
    };
    let away = dialog.away_longer_than(deps.settings.welcome_back_after, turn.now());
    let extras = Extras {
        update_id,
        ..Extras::default()
    };
    match record(deps, dialog, Role::User, text, extras).await {
        Recorded::Stored => {}
        Recorded::Duplicate => {
            deps.metrics.duplicate_updates_total.inc();
            tracing::debug!(?update_id, "duplicate update ignored");
            return;
        }
        Recorded::Failed => {
            turn.say(texts.storage_failed, None).await;
            return;
        }
    }
    // Back after a long while: the persona greets the user and recalls the story first.
    let directive = match away {
        Some(away_ms) if dialog.history.len() > 1 => Directive::ReplyAfterAbsence { away_ms },
        _ => Directive::Reply,
    };
    write_reply(turn, dialog, directive).await;
}

/// The "Retry" button: asks the LLM again when the last message is the user's, unanswered.
pub(super) async fn retry_last(turn: &Turn<'_>, state: &mut SessionState) {
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
    match state.active() {
        Some(dialog) => write_reply(turn, dialog, Directive::ContinueStory).await,
        None => {
            let keyboard = gallery_keyboard(turn.deps, turn.lang);
            turn.say(turn.texts.choose_persona_first, Some(&keyboard))
                .await;
        }
    }
}
