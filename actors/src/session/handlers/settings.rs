//! The active slot's modes (/settings, which also leads to the notification settings) and
//! the bot's language (/language).

use crate::domain::catalogue::Feature;
use crate::domain::texts::Lang;
use crate::ports::Keyboard;
use crate::session::buttons::{ButtonData, Mode};
use crate::session::keyboards::{button, language_keyboard};
use crate::session::state::SessionState;
use crate::session::turn::Turn;

/// The active slot's modes as toggle buttons; shown anew, or in place of the message whose
/// button was pressed.
pub(super) async fn show_settings(turn: &Turn<'_>, state: &mut SessionState, edit: Option<i64>) {
    let texts = turn.texts;
    let Some(dialog) = state.active_slot.and_then(|slot| state.slot(slot)) else {
        // Without a dialog there are no modes, but notifications are the user's own.
        super::notifications::show(turn, edit).await;
        return;
    };
    let entitlement = &state.entitlement;
    let toggle = |label: &str, on: bool, mode: Mode| {
        let shown = if !entitlement.has(feature_of(mode)) {
            "🔒"
        } else if on {
            texts.on
        } else {
            texts.off
        };
        vec![button(
            &format!("{label}: {shown}"),
            ButtonData::Toggle(mode),
        )]
    };
    let title = dialog.describe(texts.settings_title, turn.lang);
    let modes = dialog.modes;
    let keyboard = Keyboard {
        rows: vec![
            toggle(texts.intense_mode_label, modes.intense_mode, Mode::Intense),
            toggle(
                texts.fantasy_scenes_label,
                modes.fantasy_scenes,
                Mode::Fantasy,
            ),
            vec![button(
                texts
                    .notifications
                    .settings_title
                    .lines()
                    .next()
                    .unwrap_or("🔔"),
                ButtonData::Notifications,
            )],
        ],
    };
    turn.show(&title, &keyboard, edit).await;
}

pub(super) async fn toggle_mode(
    turn: &Turn<'_>,
    state: &mut SessionState,
    mode: Mode,
    message_id: Option<i64>,
) {
    let texts = turn.texts;
    let feature = feature_of(mode);
    if !state.entitlement.has(feature) {
        // Locked: its unlock is offered instead.
        super::shop::offer_unlock(turn, feature, super::shop::feature_name(turn, feature)).await;
        return;
    }
    let Some(dialog) = state.active() else {
        turn.say(texts.settings_need_dialog, None).await;
        return;
    };
    let mut modes = dialog.modes;
    match mode {
        Mode::Intense => modes.intense_mode = !modes.intense_mode,
        Mode::Fantasy => modes.fantasy_scenes = !modes.fantasy_scenes,
    }
    if let Err(error) = turn.deps.store.set_dialog_modes(dialog.id, modes).await {
        turn.storage_failed(&error, "a dialog's modes").await;
        return;
    }
    dialog.set_modes(modes);
    show_settings(turn, state, message_id).await;
}

/// The feature that opens a mode.
fn feature_of(mode: Mode) -> Feature {
    match mode {
        Mode::Intense => Feature::IntenseMode,
        Mode::Fantasy => Feature::FantasyScenes,
    }
}

/// /language: which language should the bot speak?
pub(super) async fn ask_language(turn: &Turn<'_>) {
    turn.say(turn.texts.language_question, Some(&language_keyboard()))
        .await;
}

pub(super) async fn choose_language(turn: &Turn<'_>, state: &mut SessionState, lang: Lang) {
    let mut preferences = state.preferences.clone();
    preferences.language = Some(lang.code().to_owned());
    if let Err(error) = turn
        .deps
        .store
        .save_preferences(turn.sender.user_id, &preferences)
        .await
    {
        turn.storage_failed(&error, "a language").await;
        return;
    }
    state.preferences = preferences;
    turn.say(lang.texts().language_set, None).await;
}
