//! Finishing what a crash left unfinished, found when the session loads: persona replies
//! stored as `delivering` (shown again, as they were), and user messages stored as
//! `pending` (their reply written again, or failed visibly).
//!
//! After a restart of the process, a reply still young enough (`session.answer_within`) is
//! written again into the placeholder the crash froze (a new message if that cannot be
//! edited); an older one, or one that is no longer the dialog's last message, is failed
//! visibly: the placeholder says so and offers "Retry". After a panic of the session's own
//! work nothing is written again (the same panic could follow): the apology takes the
//! placeholder's place. Either way each message ends answered or visibly failed, once.

use crate::domain::event::Sender;
use crate::domain::texts::{TELEGRAM_MESSAGE_LIMIT, excerpt, fill, split_message};
use crate::metrics::Recovered;
use crate::ports::clock::millis;
use crate::ports::{DeliveryError, MessageStatus, PendingDelivery, PendingReply, Render, Role};
use crate::session::buttons::ButtonData;
use crate::session::delivery::send;
use crate::session::keyboards::{button, reply_keyboard, retry_keyboard, row};
use crate::session::state::{Dialog, Generation, Recovery, SessionDeps, SessionState, Unfinished};
use crate::session::streaming::{Directive, ShownReply, open_reply, write_reply_into};
use crate::session::turn::Turn;

/// Finishes (or visibly fails) every unfinished reply of the loaded state, as `recovery`
/// says.
pub(crate) async fn recover_replies(
    deps: &SessionDeps,
    state: &mut SessionState,
    generation: &Generation,
    recovery: Recovery,
) {
    let unfinished = std::mem::take(&mut state.unfinished);
    if let Recovery::AfterCrash {
        apology_to: Some((chat, apology)),
    } = recovery
    {
        if unfinished.is_empty() {
            send(deps, chat, apology, None).await;
            return;
        }
    }
    // Whom to write to: the stored profile (a session is only recovered for a known user).
    let Some(profile) = state.profile.clone() else {
        return;
    };
    let sender = Sender {
        user_id: profile.user_id,
        chat_id: profile.chat_id,
        first_name: profile.first_name,
        language_code: profile.language_code,
    };
    let lang = state.lang(&sender);
    let turn = Turn {
        deps,
        sender: &sender,
        lang,
        texts: lang.texts(),
        generation,
        api: None,
    };
    for (slot, unfinished) in unfinished {
        let Some(dialog) = state.slot_mut(slot) else {
            continue;
        };
        let pending = match unfinished {
            Unfinished::Reply(pending) => pending,
            // Its text is stored: shown again as it was (whatever stopped the process).
            Unfinished::Delivery(delivery) => {
                show_again(&turn, dialog, &delivery).await;
                continue;
            }
        };
        let is_last = dialog
            .history
            .back()
            .is_some_and(|entry| entry.message_id == pending.message_id);
        let answered = dialog
            .history
            .iter()
            .skip_while(|entry| entry.message_id != pending.message_id)
            .skip(1)
            .any(|entry| entry.role == Role::Assistant);
        if answered {
            // Its reply is stored (the process stopped between the two writes): it was
            // answered, and the reply was shown (again) above.
            if let Err(error) = deps
                .store
                .set_status(pending.message_id, MessageStatus::Complete)
                .await
            {
                tracing::warn!(%error, "could not mark an answered message answered");
            }
            continue;
        }
        let age = turn.now() - pending.created_at;
        let answer_now = recovery == Recovery::AfterRestart
            && is_last
            && age <= millis(deps.settings.answer_within);
        if answer_now {
            tracing::info!(age_ms = age, "writing a reply a restart cut short");
            deps.metrics.count_recovered(Recovered::Rewritten);
            let reuse = pending.reply_message_id.map(ShownReply::frozen);
            if let Ok(live) = open_reply(&turn, reuse).await {
                write_reply_into(&turn, dialog, Directive::Reply, live).await;
                continue;
            }
        }
        deps.metrics.count_recovered(Recovered::Failed);
        let text = match recovery {
            Recovery::AfterCrash { .. } => turn.texts.internal_error,
            Recovery::AfterRestart => turn.texts.reply_interrupted,
        };
        fail_visibly(&turn, &pending, text, is_last).await;
    }
}

/// Shows a stored reply again in its message: an edit that changes nothing if it had
/// arrived, the reply itself if it had not (a new message if that one cannot be edited).
async fn show_again(turn: &Turn<'_>, dialog: &mut Dialog, delivery: &PendingDelivery) {
    let deps = turn.deps;
    if delivery.telegram_message_id.is_none() {
        // It was being sent as a new message (it streamed as a draft): it may have arrived,
        // and sending it again could show it twice. The user is asked instead.
        return offer_reply(turn, delivery).await;
    }
    let keyboard = reply_keyboard(
        turn.texts,
        dialog.persona_messages,
        deps.settings.continue_every,
    );
    let parts = split_message(&delivery.content, TELEGRAM_MESSAGE_LIMIT);
    let last = parts.len() - 1;
    // The messages the reply occupies, in order.
    let mut shown_in = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let keyboard = (index == last).then_some(&keyboard);
        if let (0, Some(message_id)) = (index, delivery.telegram_message_id) {
            let edit = deps
                .messenger
                .edit_text(turn.chat(), message_id, part, keyboard, Render::Final)
                .await;
            // Only a certain refusal makes a new message (see `DeliveryError`).
            if !matches!(edit, Err(DeliveryError::Failed(_))) {
                shown_in.push(message_id);
                continue;
            }
        }
        if let Some(message_id) = send(deps, turn.chat(), part, keyboard).await {
            shown_in.push(message_id);
        }
    }
    deps.metrics.count_recovered(Recovered::Reshown);
    let (last, earlier) = match shown_in.split_last() {
        Some((last, earlier)) => (Some(*last), earlier.to_vec()),
        None => (None, Vec::new()),
    };
    if let Err(error) = deps
        .store
        .finish_delivery(delivery.message_id, MessageStatus::Complete, last, &earlier)
        .await
    {
        tracing::warn!(%error, "could not mark a reply shown again");
    }
}

/// A reply that may or may not have reached the user: a notice with a button that shows it
/// (never sent twice unasked); stored as shown, so the next start does not ask again.
async fn offer_reply(turn: &Turn<'_>, delivery: &PendingDelivery) {
    let deps = turn.deps;
    let keyboard = row(vec![button(
        turn.texts.show_reply_button,
        ButtonData::ShowReply {
            message: delivery.message_id,
        },
    )]);
    let start = excerpt(&delivery.content, 60);
    let notice = fill(turn.texts.reply_maybe_delivered, &[("start", &start)]);
    turn.say(&notice, Some(&keyboard)).await;
    deps.metrics.count_recovered(Recovered::Offered);
    if let Err(error) = deps
        .store
        .finish_delivery(delivery.message_id, MessageStatus::Complete, None, &[])
        .await
    {
        tracing::warn!(%error, "could not mark an offered reply");
    }
}

/// Shows `text` where the unfinished reply is (a new message if that cannot be edited),
/// with "Retry" when the message is still the dialog's last, and stores the message as
/// unanswered.
async fn fail_visibly(turn: &Turn<'_>, pending: &PendingReply, text: &str, retry: bool) {
    let deps = turn.deps;
    let keyboard = retry.then(|| retry_keyboard(turn.texts));
    let edited = match pending.reply_message_id {
        Some(message_id) => deps
            .messenger
            .edit_text(
                turn.chat(),
                message_id,
                text,
                keyboard.as_ref(),
                Render::Final,
            )
            .await
            .is_ok(),
        None => false,
    };
    if !edited {
        turn.say(text, keyboard.as_ref()).await;
    }
    if let Err(error) = deps
        .store
        .set_status(pending.message_id, MessageStatus::Unanswered)
        .await
    {
        tracing::warn!(%error, "could not store an interrupted reply as unanswered");
    }
}
