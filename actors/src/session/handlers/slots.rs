//! The three dialog slots: opening a story in one, /dialogs, "Continue" on a slot, clearing
//! one slot or all of them.

use std::sync::Arc;

use crate::domain::persona::{Persona, Story};
use crate::domain::texts::fill;
use crate::ports::{DialogModes, Keyboard, NewDialog, Role};
use crate::session::buttons::ButtonData;
use crate::session::delivery::{Extras, delivery_status, record, send_long};
use crate::session::keyboards::{button, row};
use crate::session::state::{Dialog, SLOT_COUNT, SessionState};
use crate::session::streaming::{Directive, write_reply};
use crate::session::turn::Turn;

/// Opens a dialog with `persona` playing `story` in `slot` (closing the one there) with
/// `modes`, makes it active and sends the story's opening.
pub(super) async fn open_story(
    turn: &Turn<'_>,
    state: &mut SessionState,
    slot: u8,
    persona: Arc<Persona>,
    story: Story,
    modes: DialogModes,
) {
    let deps = turn.deps;
    let dialog_id = match deps
        .store
        .open_dialog(&NewDialog {
            user_id: turn.sender.user_id,
            slot,
            persona_id: persona.id.clone(),
            story_id: story.id.clone(),
            modes,
        })
        .await
    {
        Ok(id) => id,
        Err(error) => {
            turn.storage_failed(&error, "a new dialog").await;
            return;
        }
    };
    state.install(Dialog::opened(
        dialog_id,
        slot,
        persona,
        story,
        modes,
        turn.now(),
    ));
    if let Some(dialog) = state.active() {
        send_opening(turn, dialog).await;
    }
}

/// Sends a dialog's story opening under a line naming the slot, persona and story, and
/// stores the opening as the persona's first message.
async fn send_opening(turn: &Turn<'_>, dialog: &mut Dialog) {
    let header = dialog.describe(turn.texts.dialog_started, turn.lang);
    let opening = dialog.persona.substitute(
        dialog.story.opening_in(turn.lang).trim(),
        &turn.sender.first_name,
    );
    let shown = format!("{header}\n\n{opening}");
    let message_id = send_long(turn.deps, turn.chat(), &shown, None).await;
    let extras = Extras {
        status: delivery_status(message_id),
        telegram_message_id: message_id,
        ..Extras::default()
    };
    record(turn.deps, dialog, Role::Assistant, opening, extras).await;
}

/// The slots with persona, story and last activity, with "Continue" and "Clear" per used
/// slot.
pub(super) async fn show_dialogs(turn: &Turn<'_>, state: &SessionState) {
    let texts = turn.texts;
    let now = turn.now();
    let mut lines = vec![texts.dialogs_title.to_owned()];
    let mut rows = Vec::new();
    for slot in 1..=SLOT_COUNT {
        let number = slot.to_string();
        match state.slot(slot) {
            Some(dialog) => {
                let active = if state.active_slot == Some(slot) {
                    texts.active_mark
                } else {
                    ""
                };
                let line = dialog.describe(texts.dialog_line, turn.lang);
                lines.push(fill(
                    &line,
                    &[
                        ("ago", &texts.ago(now - dialog.last_active_at)),
                        ("active", active),
                    ],
                ));
                rows.push(vec![
                    button(
                        &fill(texts.continue_button, &[("slot", &number)]),
                        ButtonData::ContinueSlot { slot },
                    ),
                    button(
                        &fill(texts.clear_button, &[("slot", &number)]),
                        ButtonData::AskClear { slot },
                    ),
                ]);
            }
            None => lines.push(fill(texts.empty_slot_line, &[("slot", &number)])),
        }
    }
    rows.push(vec![button(texts.new_dialog_button, ButtonData::Gallery)]);
    turn.say(&lines.join("\n"), Some(&Keyboard { rows })).await;
}

/// "Continue" on a slot: it becomes the active one. After a long absence the persona greets
/// the user and recalls where the story was; otherwise the user sees where it stopped.
pub(super) async fn continue_slot(turn: &Turn<'_>, state: &mut SessionState, slot: u8) {
    let texts = turn.texts;
    let deps = turn.deps;
    if state.slot(slot).is_none() {
        turn.say(texts.slot_empty, None).await;
        return;
    }
    if state.active_slot != Some(slot) {
        if let Err(error) = deps.store.activate_slot(turn.sender.user_id, slot).await {
            turn.storage_failed(&error, "the active slot").await;
            return;
        }
        state.active_slot = Some(slot);
    }
    let Some(dialog) = state.slot_mut(slot) else {
        return;
    };
    let header = dialog.describe(texts.switched_to, turn.lang);
    let away = dialog.away_longer_than(deps.settings.welcome_back_after, turn.now());
    if let Some(away_ms) = away.filter(|_| !dialog.history.is_empty()) {
        turn.say(&header, None).await;
        write_reply(turn, dialog, Directive::WelcomeBack { away_ms }).await;
        return;
    }
    // Where the story stopped: the persona's last message, as a reminder.
    let last = dialog
        .history
        .iter()
        .rev()
        .find(|entry| entry.role == Role::Assistant);
    let shown = match last {
        Some(last) => format!("{header}\n\n{}", last.content),
        None => header,
    };
    send_long(deps, turn.chat(), &shown, None).await;
}

pub(super) async fn ask_clear(turn: &Turn<'_>, state: &SessionState, slot: u8) {
    let texts = turn.texts;
    let Some(dialog) = state.slot(slot) else {
        turn.say(texts.slot_empty, None).await;
        return;
    };
    let question = dialog.describe(texts.clear_question, turn.lang);
    let confirm = ButtonData::Clear {
        slot,
        dialog: dialog.id,
    };
    let keyboard = row(vec![
        button(texts.clear_confirm_button, confirm),
        button(texts.cancel_button, ButtonData::Cancel),
    ]);
    turn.say(&question, Some(&keyboard)).await;
}

/// Empties one slot's history: the dialog is closed (its messages stay stored) and the same
/// story starts again in the slot, which becomes active.
pub(super) async fn clear_slot(turn: &Turn<'_>, state: &mut SessionState, slot: u8) {
    let texts = turn.texts;
    let Some(dialog) = state.slot(slot) else {
        turn.say(texts.slot_empty, None).await;
        return;
    };
    let (persona, story) = (dialog.persona.clone(), dialog.story.clone());
    let modes = dialog.modes;
    open_story(turn, state, slot, persona, story, modes).await;
}

pub(super) async fn reset_all(turn: &Turn<'_>, state: &mut SessionState) {
    let texts = turn.texts;
    if let Err(error) = turn.deps.store.close_all_dialogs(turn.sender.user_id).await {
        turn.storage_failed(&error, "a reset of the dialogs").await;
        return;
    }
    state.slots = Default::default();
    state.active_slot = None;
    turn.say(texts.reset_done, None).await;
}

/// The newest open dialog's id (0 with none): what a /reset question was about.
pub(super) fn newest_dialog(state: &SessionState) -> i64 {
    state
        .slots
        .iter()
        .flatten()
        .map(|dialog| dialog.id)
        .max()
        .unwrap_or(0)
}

/// /reset: asks before closing all three slots. The answer names the newest dialog, so it
/// clears nothing once another story was opened since.
pub(super) async fn ask_reset(turn: &Turn<'_>, state: &SessionState) {
    let texts = turn.texts;
    let confirm = ButtonData::ResetAll {
        newest: newest_dialog(state),
    };
    let keyboard = row(vec![
        button(texts.reset_confirm_button, confirm),
        button(texts.cancel_button, ButtonData::Cancel),
    ]);
    turn.say(texts.reset_question, Some(&keyboard)).await;
}
