//! What a session does with one event: commands, buttons and messages, with exclusive
//! access to the session's state (see [`actor`](super::actor) for the ordering and the
//! panics). This file dispatches; each concern has its own file:
//!
//! - [`gallery`]: the persona gallery and story cards, starting a story (asking which slot
//!   to replace when all three are in use, and for 18+ personas the age first);
//! - [`slots`]: the three slots: opening a story in one, /dialogs, "Continue", clearing one
//!   slot or all;
//! - [`settings`]: the active slot's modes (a locked one offers its unlock) and the
//!   language;
//! - [`shop`]: /store, buying, /status with the renewal switch, and the daily limit checked
//!   before every reply;
//! - [`notifications`]: the notification settings (topics, quiet hours, /timezone) and
//!   /report;
//! - [`memory`]: /memory (what the persona remembers, with buttons to forget) and
//!   /forget_me;
//! - [`reply`]: the user's text, "Retry", "Regenerate" and "Continue the story", written by
//!   [`streaming`](super::streaming).

mod gallery;
mod memory;
mod notifications;
mod recover;
mod reply;
mod settings;
mod shop;
mod slots;

#[cfg(test)]
mod shop_tests;
#[cfg(test)]
mod tests;

use crate::domain::event::{ApiOutcome, Command, Inbound, InboundKind, Sender};
use crate::metrics::ErrorKind;
use crate::ports::events::record_event;
use crate::ports::{EventKind, LoggedEvent, Severity, UserProfile};
use crate::session::buttons::ButtonData;
use crate::session::delivery::finish_update;
use crate::session::keyboards::menu_keyboard;
use crate::session::memory::extract_if_due;
use crate::session::state::{Generation, SessionDeps, SessionState};
use crate::session::turn::{Arrival, Turn};
use gallery::StartOptions;
pub(crate) use recover::recover_replies;

/// Handles one event with exclusive access to the session's state.
pub(crate) async fn handle_event(
    deps: &SessionDeps,
    state: &mut SessionState,
    event: Inbound,
    generation: &Generation,
) {
    // Redelivered updates were turned away at the ingress, which stored this one before
    // Telegram was told it arrived.
    let arrival = Arrival {
        update_id: event.update_id,
        accepted_at: event.accepted_at,
        replayed: event.replayed,
    };
    // A chat API call speaks for the user under their Telegram name and language, from
    // a chat of the API's own that must not replace their Telegram chat.
    let sender = match (&event.api, &state.profile) {
        (Some(_), Some(profile)) => Sender {
            first_name: profile.first_name.clone(),
            language_code: profile.language_code.clone(),
            ..event.sender.clone()
        },
        (Some(_), None) => event.sender.clone(),
        (None, _) => {
            remember_sender(deps, state, &event.sender).await;
            event.sender.clone()
        }
    };
    let lang = state.lang(&sender);
    let turn = Turn {
        deps,
        sender: &sender,
        lang,
        texts: lang.texts(),
        generation,
        api: event.api.as_ref(),
    };
    // A chat API call may name the slot to talk in: the active one for this event only.
    let active_slot = state.active_slot;
    if let Some(slot) = event.api.as_ref().and_then(|api| api.slot) {
        if state.slot_mut(slot).is_none() {
            turn.report(ApiOutcome::NoDialog);
            return;
        }
        state.active_slot = Some(slot);
    }
    match event.kind {
        InboundKind::Command(command) => run_command(&turn, state, command).await,
        InboundKind::Button {
            callback_id,
            data,
            message_id,
        } => {
            if let Err(error) = deps.messenger.acknowledge_button(&callback_id).await {
                tracing::debug!(%error, "could not acknowledge a button");
            }
            press_button(&turn, state, &data, message_id).await;
        }
        InboundKind::Text(text) => {
            reply::answer_text(&turn, state, text, &arrival).await;
            state.active_slot = active_slot;
        }
        InboundKind::Unsupported => {
            turn.say(turn.texts.text_only, None).await;
        }
        // The actor stops the reply before the queue (see `SessionActor::stop_draft`); one
        // that got here has no reply left to stop.
        InboundKind::DraftStopped { .. } => {}
    }
    // Enough new messages in the active dialog: the keeper looks for facts (never waited
    // for).
    let more_than = deps.memory.settings.extract_after_messages;
    if let Some(dialog) = state.active() {
        extract_if_due(
            deps,
            dialog,
            event.sender.user_id,
            &event.sender.first_name,
            more_than,
        );
    }
    // Unless storing the message it brought did already.
    if !generation.is_update_settled() {
        finish_update(deps, arrival.update_id).await;
    }
}

async fn run_command(turn: &Turn<'_>, state: &mut SessionState, command: Command) {
    let texts = turn.texts;
    match command {
        Command::Start => gallery::show_gallery(turn).await,
        Command::Help | Command::Unknown(_) => {
            turn.say(texts.help, Some(&menu_keyboard(texts))).await;
        }
        Command::Menu => {
            turn.say(texts.menu_title, Some(&menu_keyboard(texts)))
                .await;
        }
        Command::Dialogs => slots::show_dialogs(turn, state).await,
        Command::Settings => settings::show_settings(turn, state, None).await,
        Command::Language => settings::ask_language(turn).await,
        // /stop normally never queues (the session handles it at once); one that did found
        // nothing being written.
        Command::Stop => {
            turn.say(texts.nothing_to_stop, None).await;
        }
        Command::Reset => slots::ask_reset(turn, state).await,
        Command::Store => shop::show_store(turn, None).await,
        Command::Status => shop::show_status(turn, state).await,
        Command::Memory => memory::show_memory(turn, state, 0).await,
        Command::ForgetMe => memory::ask_forget_me(turn).await,
        Command::Report => notifications::report(turn).await,
        Command::TimeZone(zone) => notifications::set_time_zone(turn, &zone).await,
    }
}

/// A pressed button, decoded; stale, old or forged data is answered "Cancelled." and
/// changes nothing.
async fn press_button(
    turn: &Turn<'_>,
    state: &mut SessionState,
    data: &str,
    message_id: Option<i64>,
) {
    let texts = turn.texts;
    match ButtonData::decode(data) {
        ButtonData::Gallery => gallery::show_gallery(turn).await,
        ButtonData::Persona { persona } => gallery::show_persona(turn, &persona).await,
        ButtonData::Story { persona, story } => {
            let options = StartOptions::default();
            gallery::start_story(turn, state, &persona, &story, options).await;
        }
        ButtonData::AdultConfirmed { persona, story } => {
            let options = StartOptions {
                adult_confirmed: true,
                ..StartOptions::default()
            };
            gallery::start_story(turn, state, &persona, &story, options).await;
        }
        ButtonData::ReplaceSlot {
            slot,
            dialog,
            persona,
            story,
        } => {
            // Only the dialog the question was about: a stale button replaces nothing.
            if state.slot(slot).map(|current| current.id) == Some(dialog) {
                let options = StartOptions {
                    slot: Some(slot),
                    ..StartOptions::default()
                };
                gallery::start_story(turn, state, &persona, &story, options).await;
            } else {
                turn.say(texts.cancelled, None).await;
            }
        }
        ButtonData::ContinueSlot { slot } => slots::continue_slot(turn, state, slot).await,
        ButtonData::AskClear { slot } => slots::ask_clear(turn, state, slot).await,
        ButtonData::Clear { slot, dialog } => {
            // Only the dialog the question was about: a stale button clears nothing.
            if state.slot(slot).map(|current| current.id) == Some(dialog) {
                slots::clear_slot(turn, state, slot).await;
            } else {
                turn.say(texts.cancelled, None).await;
            }
        }
        ButtonData::ResetAll { newest } => {
            if newest == slots::newest_dialog(state) {
                slots::reset_all(turn, state).await;
            } else {
                turn.say(texts.cancelled, None).await;
            }
        }
        ButtonData::Dialogs => slots::show_dialogs(turn, state).await,
        ButtonData::Menu => {
            turn.say(texts.menu_title, Some(&menu_keyboard(texts)))
                .await;
        }
        ButtonData::Settings => settings::show_settings(turn, state, None).await,
        ButtonData::LanguageMenu => settings::ask_language(turn).await,
        ButtonData::Toggle(mode) => settings::toggle_mode(turn, state, mode, message_id).await,
        ButtonData::Language(lang) => settings::choose_language(turn, state, lang).await,
        ButtonData::Regenerate => reply::regenerate(turn, state, message_id).await,
        ButtonData::ContinueStory => reply::continue_story(turn, state).await,
        ButtonData::Retry => reply::retry_last(turn, state).await,
        ButtonData::ShowReply { message } => reply::show_stored_reply(turn, state, message).await,
        ButtonData::Cancel => {
            turn.say(texts.cancelled, None).await;
        }
        ButtonData::Store => shop::show_store(turn, None).await,
        ButtonData::Buy { product } => shop::buy(turn, &product).await,
        ButtonData::Status => shop::show_status(turn, state).await,
        ButtonData::Renewal { renewing } => shop::set_renewal(turn, state, renewing).await,
        ButtonData::MemoryPage { page } => memory::show_memory(turn, state, page).await,
        ButtonData::ForgetMemory { memory, page } => {
            memory::forget_memory(turn, state, memory, page).await;
        }
        ButtonData::ForgetAllMemories { persona } => {
            memory::forget_all_memories(turn, state, &persona).await;
        }
        ButtonData::ForgetMe => memory::forget_me(turn, state).await,
        ButtonData::Notifications => notifications::show(turn, None).await,
        ButtonData::NotifyTopic(topic) => {
            notifications::toggle_topic(turn, topic, message_id).await;
        }
        ButtonData::QuietHours { start, end } => {
            notifications::set_quiet_hours(turn, start, end, message_id).await;
        }
        ButtonData::TimeZoneHelp => notifications::explain_time_zone(turn).await,
        ButtonData::Unknown => {
            tracing::debug!(data, "unknown button data");
            turn.say(texts.cancelled, None).await;
        }
    }
}

/// Stores the user's profile when it is new or Telegram reports a change.
async fn remember_sender(deps: &SessionDeps, state: &mut SessionState, sender: &Sender) {
    let profile = UserProfile {
        user_id: sender.user_id,
        chat_id: sender.chat_id,
        first_name: sender.first_name.clone(),
        language_code: sender.language_code.clone(),
    };
    if state.profile.as_ref() == Some(&profile) {
        return;
    }
    match deps.store.save_profile(&profile).await {
        Ok(()) => {
            if state.profile.is_none() {
                let event = LoggedEvent {
                    at: deps.clock.now_millis(),
                    severity: Severity::Info,
                    kind: EventKind::Registration,
                    user_id: Some(profile.user_id),
                    detail: format!(
                        "a new user (language {})",
                        profile.language_code.as_deref().unwrap_or("unknown")
                    ),
                };
                record_event(deps.events.as_ref(), event).await;
            }
            state.profile = Some(profile);
        }
        Err(error) => {
            tracing::warn!(%error, "could not save a user profile");
            deps.metrics.count_error(ErrorKind::Storage);
        }
    }
}
