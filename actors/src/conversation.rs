//! What a session does with one event: commands, buttons and messages, with exclusive
//! access to the session's state (see [`crate::session`] for the ordering and the panics).
//!
//! The user's three dialog slots live here: the persona gallery and story cards, starting a
//! story in a free slot (or asking which one to replace), switching with "Continue",
//! clearing one slot or all, the per-slot settings and the language. Replies are written by
//! [`crate::streaming`].
//!
//! Button data (at most 64 bytes: persona ids have at most 24 characters, story ids 20, and
//! dialog ids are written in base 36, at most 13). A question's answer names the dialog it
//! was about, so an old button can never act on a dialog opened since: it answers
//! "Cancelled." instead.
//!
//! | data | meaning |
//! | --- | --- |
//! | `g` | the persona gallery |
//! | `p:{persona}` | a persona's card and stories |
//! | `s:{persona}:{story}` | start a story (in a free slot, or ask which to replace) |
//! | `a:{persona}:{story}` | the user confirmed being 18+, then start |
//! | `r:{slot}:{dialog}:{persona}:{story}` | start a story in `slot`, replacing `dialog` |
//! | `c:{slot}` / `k:{slot}` | continue / ask to clear a slot |
//! | `k!:{slot}:{dialog}` | clear the slot, if it still holds that dialog |
//! | `reset!:{dialog}` | clear all slots (after /reset asked; `dialog`: the newest then) |
//! | `d`, `m`, `st`, `l` | dialogs, menu, settings, language |
//! | `t:intense` / `t:fantasy` | toggle a mode of the active slot |
//! | `l:{ru,en}` | choose the language |
//! | `regen`, `more`, `retry` | regenerate the last reply, continue the story, retry |
//! | `x` | cancel a question |

use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{Command, Inbound, InboundKind, Sender};
use crate::persona::{Persona, Story};
use crate::ports::{
    Appended, Button, ChatId, DialogModes, HistoryEntry, Keyboard, MessageStatus, NewMessage, Role,
    StoredDialog, TokenUsage, UserProfile,
};
use crate::safety::Verdict;
use crate::session::{Dialog, Generation, SLOT_COUNT, SessionDeps, SessionState};
use crate::streaming::{Directive, write_reply};
use crate::texts::{Lang, TELEGRAM_MESSAGE_LIMIT, Texts, fill, split_message};

/// Callback data of the button that asks the LLM again for an unanswered message.
pub const RETRY_BUTTON: &str = "retry";
/// Callback data of "Regenerate" on the last reply.
pub const REGENERATE_BUTTON: &str = "regen";
/// Callback data of "Continue" on every n-th persona message.
pub const CONTINUE_STORY_BUTTON: &str = "more";

/// The current time in Unix milliseconds.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// What every step of handling one event needs: the dependencies, who it is for, in which
/// language, and the reply being written (for /stop).
pub(crate) struct Turn<'a> {
    pub(crate) deps: &'a SessionDeps,
    pub(crate) sender: &'a Sender,
    pub(crate) lang: Lang,
    pub(crate) texts: &'static Texts,
    pub(crate) generation: &'a Generation,
}

impl Turn<'_> {
    pub(crate) fn chat(&self) -> ChatId {
        self.sender.chat_id
    }

    /// Sends a text (split past Telegram's limit; the keyboard goes on the last part).
    pub(crate) async fn say(&self, text: &str, keyboard: Option<&Keyboard>) -> Option<i64> {
        send_long(self.deps, self.chat(), text, keyboard).await
    }
}

/// Handles one event with exclusive access to the session's state.
pub(crate) async fn handle_event(
    deps: &SessionDeps,
    state: &mut SessionState,
    event: Inbound,
    generation: &Generation,
) {
    // A text for an open dialog claims its update in the same call that stores it; every
    // other event claims it here, before anything happens.
    let has_dialog = state
        .active_slot
        .and_then(|slot| state.slot(slot))
        .is_some();
    let claimed_with_message = matches!(event.kind, InboundKind::Text(_)) && has_dialog;
    if let Some(update_id) = event.update_id.filter(|_| !claimed_with_message) {
        if !claim(deps, state, &event.sender, update_id).await {
            return;
        }
    }
    remember_sender(deps, state, &event.sender).await;
    let lang = state.lang(&event.sender);
    let turn = Turn {
        deps,
        sender: &event.sender,
        lang,
        texts: lang.texts(),
        generation,
    };
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
            // The update still to be claimed, if it was not above.
            let unclaimed = event.update_id.filter(|_| claimed_with_message);
            answer_text(&turn, state, text, unclaimed).await;
        }
        InboundKind::Unsupported => {
            turn.say(turn.texts.text_only, None).await;
        }
    }
}

/// Records that an update is being handled; false for a redelivery (or when storage fails,
/// after telling the user).
async fn claim(deps: &SessionDeps, state: &SessionState, sender: &Sender, update_id: i64) -> bool {
    match deps.store.claim_update(update_id).await {
        Ok(true) => true,
        Ok(false) => {
            // Telegram redelivered an update we handled already: answer it only once.
            deps.metrics.duplicate_updates_total.inc();
            tracing::debug!(update_id, "duplicate update ignored");
            false
        }
        Err(error) => {
            tracing::error!(%error, "could not record an update");
            deps.metrics.count_error("storage");
            let texts = state.lang(sender).texts();
            send(deps, sender.chat_id, texts.storage_failed, None).await;
            false
        }
    }
}

async fn run_command(turn: &Turn<'_>, state: &mut SessionState, command: Command) {
    let texts = turn.texts;
    match command {
        Command::Start => show_gallery(turn).await,
        Command::Help | Command::Unknown(_) => {
            turn.say(texts.help, Some(&menu_keyboard(texts))).await;
        }
        Command::Menu => {
            turn.say(texts.menu_title, Some(&menu_keyboard(texts)))
                .await;
        }
        Command::Dialogs => show_dialogs(turn, state).await,
        Command::Settings => show_settings(turn, state, None).await,
        Command::Language => {
            let keyboard = Keyboard {
                rows: vec![vec![
                    button("Русский", "l:ru".into()),
                    button("English", "l:en".into()),
                ]],
            };
            turn.say(texts.language_question, Some(&keyboard)).await;
        }
        // /stop normally never queues (the session handles it at once); one that did found
        // nothing being written.
        Command::Stop => {
            turn.say(texts.nothing_to_stop, None).await;
        }
        Command::Reset => {
            let keyboard = Keyboard {
                rows: vec![vec![
                    button(
                        texts.reset_confirm_button,
                        format!("reset!:{}", short_id(newest_dialog(state))),
                    ),
                    button(texts.cancel_button, "x".into()),
                ]],
            };
            turn.say(texts.reset_question, Some(&keyboard)).await;
        }
    }
}

async fn press_button(
    turn: &Turn<'_>,
    state: &mut SessionState,
    data: &str,
    message_id: Option<i64>,
) {
    let texts = turn.texts;
    let mut parts = data.split(':');
    let head = parts.next().unwrap_or("");
    let args: Vec<&str> = parts.collect();
    let slot_arg = |index: usize| {
        args.get(index)
            .and_then(|value| value.parse::<u8>().ok())
            .filter(|slot| (1..=SLOT_COUNT).contains(slot))
    };
    match (head, args.as_slice()) {
        ("g", []) => show_gallery(turn).await,
        ("p", [persona_id]) => show_persona(turn, persona_id).await,
        ("s", [persona_id, story_id]) => {
            start_story(turn, state, persona_id, story_id, StartOptions::default()).await;
        }
        ("a", [persona_id, story_id]) => {
            let options = StartOptions {
                adult_confirmed: true,
                ..StartOptions::default()
            };
            start_story(turn, state, persona_id, story_id, options).await;
        }
        ("r", [_, dialog, persona_id, story_id]) if slot_arg(0).is_some() => {
            let current = slot_arg(0).and_then(|slot| state.slot(slot)).map(|d| d.id);
            if current.is_some() && current == parse_short_id(dialog) {
                let options = StartOptions {
                    slot: slot_arg(0),
                    ..StartOptions::default()
                };
                start_story(turn, state, persona_id, story_id, options).await;
            } else {
                turn.say(texts.cancelled, None).await;
            }
        }
        ("c", [_]) if slot_arg(0).is_some() => {
            if let Some(slot) = slot_arg(0) {
                continue_slot(turn, state, slot).await;
            }
        }
        ("k", [_]) if slot_arg(0).is_some() => {
            if let Some(slot) = slot_arg(0) {
                ask_clear(turn, state, slot).await;
            }
        }
        ("k!", [_, dialog_id]) if slot_arg(0).is_some() => {
            let current = slot_arg(0).and_then(|slot| state.slot(slot)).map(|d| d.id);
            match (slot_arg(0), parse_short_id(dialog_id)) {
                // Only the dialog the question was about: a stale button clears nothing.
                (Some(slot), Some(id)) if current == Some(id) => {
                    clear_slot(turn, state, slot).await;
                }
                _ => {
                    turn.say(texts.cancelled, None).await;
                }
            }
        }
        ("reset!", [newest]) => {
            if parse_short_id(newest) == Some(newest_dialog(state)) {
                reset_all(turn, state).await;
            } else {
                turn.say(texts.cancelled, None).await;
            }
        }
        ("d", []) => show_dialogs(turn, state).await,
        ("m", []) => {
            turn.say(texts.menu_title, Some(&menu_keyboard(texts)))
                .await;
        }
        ("st", []) => show_settings(turn, state, None).await,
        ("t", [mode]) => toggle_mode(turn, state, mode, message_id).await,
        ("l", []) => {
            Box::pin(run_command(turn, state, Command::Language)).await;
        }
        ("l", [code]) => choose_language(turn, state, code).await,
        (REGENERATE_BUTTON, []) => regenerate(turn, state, message_id).await,
        (CONTINUE_STORY_BUTTON, []) => continue_story(turn, state).await,
        (RETRY_BUTTON, []) => retry_last(turn, state).await,
        ("x", []) => {
            turn.say(texts.cancelled, None).await;
        }
        _ => {
            // An old or forged button: show where things are instead of doing nothing.
            tracing::debug!(data, "unknown button data");
            show_gallery(turn).await;
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
        Ok(()) => state.profile = Some(profile),
        Err(error) => {
            tracing::warn!(%error, "could not save a user profile");
            deps.metrics.count_error("storage");
        }
    }
}

fn button(label: &str, data: String) -> Button {
    Button {
        label: label.to_owned(),
        data,
    }
}

fn menu_keyboard(texts: &Texts) -> Keyboard {
    Keyboard {
        rows: vec![
            vec![
                button(texts.menu_dialogs_button, "d".into()),
                button(texts.new_dialog_button, "g".into()),
            ],
            vec![
                button(texts.menu_settings_button, "st".into()),
                button(texts.menu_language_button, "l".into()),
            ],
        ],
    }
}

fn persona_label(persona: &Persona, texts: &Texts) -> String {
    let adult = if persona.adult { texts.adult_mark } else { "" };
    format!("{}{adult}", persona.name)
}

/// The persona gallery: each persona's name and tagline, and a button per persona (two per
/// row).
/// The persona buttons, two to a row.
pub(crate) fn gallery_keyboard(deps: &SessionDeps, lang: Lang) -> Keyboard {
    let texts = lang.texts();
    let buttons: Vec<Button> = deps
        .personas
        .all()
        .iter()
        .map(|persona| button(&persona_label(persona, texts), format!("p:{}", persona.id)))
        .collect();
    Keyboard {
        rows: buttons.chunks(2).map(<[Button]>::to_vec).collect(),
    }
}

/// The gallery: every persona with its tagline, and a button each.
async fn show_gallery(turn: &Turn<'_>) {
    let texts = turn.texts;
    let mut text = String::from(texts.choose_persona);
    text.push('\n');
    for persona in turn.deps.personas.all() {
        text.push_str(&format!(
            "\n• {} — {}",
            persona_label(persona, texts),
            persona.tagline_in(turn.lang)
        ));
    }
    let keyboard = gallery_keyboard(turn.deps, turn.lang);
    turn.say(&text, Some(&keyboard)).await;
}

/// A persona's card: name, description and a button per story.
async fn show_persona(turn: &Turn<'_>, persona_id: &str) {
    let texts = turn.texts;
    let Some(persona) = turn.deps.personas.get(persona_id) else {
        let keyboard = gallery_keyboard(turn.deps, turn.lang);
        turn.say(texts.unknown_persona, Some(&keyboard)).await;
        return;
    };
    // A card is a short read (an imported description may be very long).
    let description = excerpt(
        &persona.substitute(
            persona.description_in(turn.lang).trim(),
            &turn.sender.first_name,
        ),
        1500,
    );
    let mut text = fill(
        texts.persona_card,
        &[
            ("name", &persona.name),
            ("adult", if persona.adult { texts.adult_mark } else { "" }),
            ("description", &description),
        ],
    );
    text.push_str("\n\n");
    text.push_str(texts.choose_story);
    let mut rows: Vec<Vec<Button>> = persona
        .stories
        .iter()
        .map(|story| {
            vec![button(
                story.title_in(turn.lang),
                format!("s:{}:{}", persona.id, story.id),
            )]
        })
        .collect();
    rows.push(vec![button(texts.back_button, "g".into())]);
    turn.say(&text, Some(&Keyboard { rows })).await;
}

/// How a story is started.
#[derive(Debug, Default, Clone, Copy)]
struct StartOptions {
    /// The slot to replace; `None`: the first free slot, or ask.
    slot: Option<u8>,
    /// The user has just confirmed being 18 or older.
    adult_confirmed: bool,
}

/// Starts a persona's story: checks the age confirmation for adult personas, finds a slot
/// (never silently replacing a dialog), opens the dialog and sends the story's opening.
async fn start_story(
    turn: &Turn<'_>,
    state: &mut SessionState,
    persona_id: &str,
    story_id: &str,
    options: StartOptions,
) {
    let texts = turn.texts;
    let deps = turn.deps;
    let Some(persona) = deps.personas.get(persona_id) else {
        let keyboard = gallery_keyboard(deps, turn.lang);
        turn.say(texts.unknown_persona, Some(&keyboard)).await;
        return;
    };
    let Some(story) = persona.story(story_id).cloned() else {
        Box::pin(show_persona(turn, persona_id)).await;
        return;
    };
    if persona.adult && !state.preferences.adult_confirmed {
        if !options.adult_confirmed {
            let keyboard = Keyboard {
                rows: vec![vec![
                    button(
                        texts.adult_confirm_button,
                        format!("a:{}:{}", persona.id, story.id),
                    ),
                    button(texts.back_button, "g".into()),
                ]],
            };
            turn.say(texts.adult_question, Some(&keyboard)).await;
            return;
        }
        let mut preferences = state.preferences.clone();
        preferences.adult_confirmed = true;
        if let Err(error) = deps
            .store
            .save_preferences(turn.sender.user_id, &preferences)
            .await
        {
            tracing::error!(%error, "could not store an age confirmation");
            deps.metrics.count_error("storage");
            turn.say(texts.storage_failed, None).await;
            return;
        }
        state.preferences = preferences;
    }
    // A second tap on the same story (or on "Replace") finds it just opened: show it again
    // instead of opening it twice.
    let just_opened = (1..=SLOT_COUNT).find(|slot| {
        state.slot(*slot).is_some_and(|dialog| {
            dialog.persona.id == persona.id
                && dialog.story.id == story.id
                && !dialog.history.iter().any(|entry| entry.role == Role::User)
        })
    });
    if let Some(slot) = just_opened {
        Box::pin(continue_slot(turn, state, slot)).await;
        return;
    }
    let free_slot = (1..=SLOT_COUNT).find(|slot| state.slot(*slot).is_none());
    let Some(slot) = options.slot.or(free_slot) else {
        ask_which_slot(turn, state, &persona, &story.id).await;
        return;
    };
    open_story(turn, state, slot, &persona, &story, DialogModes::default()).await;
}

/// Opens a dialog with `persona` playing `story` in `slot` (closing the one there) with
/// `modes`, makes it active and sends the story's opening.
async fn open_story(
    turn: &Turn<'_>,
    state: &mut SessionState,
    slot: u8,
    persona: &Persona,
    story: &Story,
    modes: DialogModes,
) {
    let deps = turn.deps;
    let dialog_id = match deps
        .store
        .open_dialog(turn.sender.user_id, slot, &persona.id, &story.id, modes)
        .await
    {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "could not open a dialog");
            deps.metrics.count_error("storage");
            turn.say(turn.texts.storage_failed, None).await;
            return;
        }
    };
    let stored = StoredDialog {
        dialog_id,
        slot,
        persona_id: persona.id.clone(),
        story_id: Some(story.id.clone()),
        last_active_at: now_millis(),
        modes,
        persona_messages: 0,
        history: Vec::new(),
    };
    let Some(dialog) = Dialog::new(deps, stored, &turn.sender.first_name) else {
        return;
    };
    state.install(dialog);
    if let Some(dialog) = state.active() {
        send_opening(turn, dialog).await;
    }
}

/// Sends a dialog's story opening under a line naming the slot, persona and story, and
/// stores the opening as the persona's first message.
async fn send_opening(turn: &Turn<'_>, dialog: &mut Dialog) {
    let header = fill(
        turn.texts.dialog_started,
        &[
            ("slot", &dialog.slot.to_string()),
            ("persona", &dialog.persona.name),
            ("story", dialog.story.title_in(turn.lang)),
        ],
    );
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

/// All three slots are in use: which one should the new story replace?
async fn ask_which_slot(turn: &Turn<'_>, state: &SessionState, persona: &Persona, story_id: &str) {
    let texts = turn.texts;
    let mut rows: Vec<Vec<Button>> = (1..=SLOT_COUNT)
        .filter_map(|slot| {
            let dialog = state.slot(slot)?;
            let label = fill(
                texts.replace_slot_button,
                &[
                    ("slot", &slot.to_string()),
                    ("persona", &dialog.persona.name),
                ],
            );
            Some(vec![button(
                &label,
                format!("r:{slot}:{}:{}:{story_id}", short_id(dialog.id), persona.id),
            )])
        })
        .collect();
    rows.push(vec![button(texts.cancel_button, "x".into())]);
    turn.say(texts.slots_full, Some(&Keyboard { rows })).await;
}

/// The slots with persona, story and last activity, with "Continue" and "Clear" per used
/// slot.
async fn show_dialogs(turn: &Turn<'_>, state: &SessionState) {
    let texts = turn.texts;
    let now = now_millis();
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
                lines.push(fill(
                    texts.dialog_line,
                    &[
                        ("slot", &number),
                        ("persona", &dialog.persona.name),
                        ("story", dialog.story.title_in(turn.lang)),
                        ("ago", &texts.ago(now - dialog.last_active_at)),
                        ("active", active),
                    ],
                ));
                rows.push(vec![
                    button(
                        &fill(texts.continue_button, &[("slot", &number)]),
                        format!("c:{slot}"),
                    ),
                    button(
                        &fill(texts.clear_button, &[("slot", &number)]),
                        format!("k:{slot}"),
                    ),
                ]);
            }
            None => lines.push(fill(texts.empty_slot_line, &[("slot", &number)])),
        }
    }
    rows.push(vec![button(texts.new_dialog_button, "g".into())]);
    turn.say(&lines.join("\n"), Some(&Keyboard { rows })).await;
}

/// "Continue" on a slot: it becomes the active one. After a long absence the persona greets
/// the user and recalls where the story was; otherwise the user sees where it stopped.
async fn continue_slot(turn: &Turn<'_>, state: &mut SessionState, slot: u8) {
    let texts = turn.texts;
    let deps = turn.deps;
    if state.slot(slot).is_none() {
        turn.say(texts.slot_empty, None).await;
        return;
    }
    if state.active_slot != Some(slot) {
        if let Err(error) = deps.store.activate_slot(turn.sender.user_id, slot).await {
            tracing::error!(%error, "could not switch slots");
            deps.metrics.count_error("storage");
            turn.say(texts.storage_failed, None).await;
            return;
        }
        state.active_slot = Some(slot);
    }
    let Some(dialog) = state.slot_mut(slot) else {
        return;
    };
    let header = fill(
        texts.switched_to,
        &[
            ("slot", &slot.to_string()),
            ("persona", &dialog.persona.name),
            ("story", dialog.story.title_in(turn.lang)),
        ],
    );
    let away_ms = now_millis() - dialog.last_active_at;
    if away_ms > welcome_back_threshold(deps) && !dialog.history.is_empty() {
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

async fn ask_clear(turn: &Turn<'_>, state: &SessionState, slot: u8) {
    let texts = turn.texts;
    let Some(dialog) = state.slot(slot) else {
        turn.say(texts.slot_empty, None).await;
        return;
    };
    let question = fill(
        texts.clear_question,
        &[
            ("slot", &slot.to_string()),
            ("persona", &dialog.persona.name),
        ],
    );
    let keyboard = Keyboard {
        rows: vec![vec![
            button(
                texts.clear_confirm_button,
                format!("k!:{slot}:{}", short_id(dialog.id)),
            ),
            button(texts.cancel_button, "x".into()),
        ]],
    };
    turn.say(&question, Some(&keyboard)).await;
}

/// Empties one slot's history: the dialog is closed (its messages stay stored) and the same
/// story starts again in the slot, which becomes active.
async fn clear_slot(turn: &Turn<'_>, state: &mut SessionState, slot: u8) {
    let texts = turn.texts;
    let Some(dialog) = state.slot(slot) else {
        turn.say(texts.slot_empty, None).await;
        return;
    };
    let (persona, story) = (dialog.persona.clone(), dialog.story.clone());
    let modes = dialog.modes;
    open_story(turn, state, slot, &persona, &story, modes).await;
}

async fn reset_all(turn: &Turn<'_>, state: &mut SessionState) {
    let texts = turn.texts;
    if let Err(error) = turn.deps.store.close_all_dialogs(turn.sender.user_id).await {
        tracing::error!(%error, "could not reset dialogs");
        turn.deps.metrics.count_error("storage");
        turn.say(texts.storage_failed, None).await;
        return;
    }
    state.slots = Default::default();
    state.active_slot = None;
    turn.say(texts.reset_done, None).await;
}

/// The active slot's modes as toggle buttons; shown anew, or in place of the message whose
/// button was pressed.
async fn show_settings(turn: &Turn<'_>, state: &mut SessionState, edit: Option<i64>) {
    let texts = turn.texts;
    let Some(dialog) = state.active() else {
        turn.say(texts.settings_need_dialog, None).await;
        return;
    };
    let state_label = |on: bool| if on { texts.on } else { texts.off };
    let title = fill(
        texts.settings_title,
        &[
            ("slot", &dialog.slot.to_string()),
            ("persona", &dialog.persona.name),
        ],
    );
    let keyboard = Keyboard {
        rows: vec![
            vec![button(
                &format!(
                    "{}: {}",
                    texts.intense_mode_label,
                    state_label(dialog.modes.intense_mode)
                ),
                "t:intense".into(),
            )],
            vec![button(
                &format!(
                    "{}: {}",
                    texts.fantasy_scenes_label,
                    state_label(dialog.modes.fantasy_scenes)
                ),
                "t:fantasy".into(),
            )],
        ],
    };
    if let Some(message_id) = edit {
        let edited = turn
            .deps
            .messenger
            .edit_text(
                turn.chat(),
                message_id,
                &title,
                Some(&keyboard),
                crate::ports::Render::Final,
            )
            .await;
        if edited.is_ok() {
            return;
        }
    }
    turn.say(&title, Some(&keyboard)).await;
}

async fn toggle_mode(
    turn: &Turn<'_>,
    state: &mut SessionState,
    mode: &str,
    message_id: Option<i64>,
) {
    let texts = turn.texts;
    let user_name = turn.sender.first_name.clone();
    let Some(dialog) = state.active() else {
        turn.say(texts.settings_need_dialog, None).await;
        return;
    };
    let mut modes = dialog.modes;
    match mode {
        "intense" => modes.intense_mode = !modes.intense_mode,
        "fantasy" => modes.fantasy_scenes = !modes.fantasy_scenes,
        _ => return,
    }
    if let Err(error) = turn.deps.store.set_dialog_modes(dialog.id, modes).await {
        tracing::error!(%error, "could not store a dialog's modes");
        turn.deps.metrics.count_error("storage");
        turn.say(texts.storage_failed, None).await;
        return;
    }
    dialog.modes = modes;
    dialog.rebuild_prompt(&turn.deps.prompts, &user_name);
    show_settings(turn, state, message_id).await;
}

async fn choose_language(turn: &Turn<'_>, state: &mut SessionState, code: &str) {
    let Some(lang) = Lang::parse(code) else {
        return;
    };
    let mut preferences = state.preferences.clone();
    preferences.language = Some(lang.code().to_owned());
    if let Err(error) = turn
        .deps
        .store
        .save_preferences(turn.sender.user_id, &preferences)
        .await
    {
        tracing::error!(%error, "could not store a language");
        turn.deps.metrics.count_error("storage");
        turn.say(turn.texts.storage_failed, None).await;
        return;
    }
    state.preferences = preferences;
    turn.say(lang.texts().language_set, None).await;
}

/// A user's text: the safety check, then store it, then the persona's reply. Any failure
/// ends in a short answer, never silence. `update_id` is the update still to be claimed
/// (with the message, so a redelivery is never stored twice).
async fn answer_text(
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
            if !claim(deps, state, turn.sender, update_id).await {
                return;
            }
        }
        let (kind, answer) = match verdict {
            Verdict::Crisis { message } => ("crisis", message),
            Verdict::Refuse { rule, explanation } => {
                tracing::info!(rule, "message refused by a safety rule");
                ("refused", explanation)
            }
            Verdict::Allow => return,
        };
        deps.metrics
            .safety_interventions_total
            .with_label_values(&[kind])
            .inc();
        turn.say(answer, None).await;
        return;
    }
    let Some(dialog) = state.active() else {
        let keyboard = gallery_keyboard(deps, turn.lang);
        turn.say(texts.choose_persona_first, Some(&keyboard)).await;
        return;
    };
    let away_ms = now_millis() - dialog.last_active_at;
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
    let directive = if away_ms > welcome_back_threshold(deps) && dialog.history.len() > 1 {
        Directive::ReplyAfterAbsence { away_ms }
    } else {
        Directive::Reply
    };
    write_reply(turn, dialog, directive).await;
}

/// `welcome_back_after` in milliseconds.
fn welcome_back_threshold(deps: &SessionDeps) -> i64 {
    i64::try_from(deps.settings.welcome_back_after.as_millis()).unwrap_or(i64::MAX)
}

/// The "Retry" button: asks the LLM again when the last message is the user's, unanswered.
async fn retry_last(turn: &Turn<'_>, state: &mut SessionState) {
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
async fn regenerate(turn: &Turn<'_>, state: &mut SessionState, message_id: Option<i64>) {
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
async fn continue_story(turn: &Turn<'_>, state: &mut SessionState) {
    match state.active() {
        Some(dialog) => write_reply(turn, dialog, Directive::ContinueStory).await,
        None => {
            let keyboard = gallery_keyboard(turn.deps, turn.lang);
            turn.say(turn.texts.choose_persona_first, Some(&keyboard))
                .await;
        }
    }
}

/// A dialog id in base 36, for button data.
fn short_id(id: i64) -> String {
    let mut digits = Vec::new();
    let mut rest = id.unsigned_abs();
    loop {
        let digit = u32::try_from(rest % 36).unwrap_or(0);
        digits.push(char::from_digit(digit, 36).unwrap_or('0'));
        rest /= 36;
        if rest == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

fn parse_short_id(text: &str) -> Option<i64> {
    i64::from_str_radix(text, 36).ok()
}

/// The newest open dialog's id (0 with none): what a /reset question was about.
fn newest_dialog(state: &SessionState) -> i64 {
    state
        .slots
        .iter()
        .flatten()
        .map(|dialog| dialog.id)
        .max()
        .unwrap_or(0)
}

/// The first `max_chars` characters of `text`, with "…" when cut.
pub(crate) fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

/// Sends one message (≤ 4096 characters), counting and logging failures. Returns the
/// Telegram message id when it was delivered.
pub(crate) async fn send(
    deps: &SessionDeps,
    chat: ChatId,
    text: &str,
    keyboard: Option<&Keyboard>,
) -> Option<i64> {
    match deps.messenger.send_text(chat, text, keyboard).await {
        Ok(message_id) => {
            deps.metrics
                .telegram_messages_total
                .with_label_values(&["out"])
                .inc();
            Some(message_id)
        }
        Err(error) => {
            tracing::warn!(%error, "could not deliver a message");
            deps.metrics.count_error("telegram");
            None
        }
    }
}

/// Sends a text of any length, split into Telegram-sized parts; the keyboard goes on the
/// last part. Returns the id of the last part delivered.
pub(crate) async fn send_long(
    deps: &SessionDeps,
    chat: ChatId,
    text: &str,
    keyboard: Option<&Keyboard>,
) -> Option<i64> {
    let parts = split_message(text, TELEGRAM_MESSAGE_LIMIT);
    let last = parts.len() - 1;
    let mut delivered = None;
    for (index, part) in parts.iter().enumerate() {
        let keyboard = if index == last { keyboard } else { None };
        delivered = send(deps, chat, part, keyboard).await.or(delivered);
    }
    delivered
}

/// A message is stored as undelivered when Telegram accepted none of its parts.
pub(crate) fn delivery_status(message_id: Option<i64>) -> MessageStatus {
    match message_id {
        Some(_) => MessageStatus::Complete,
        None => MessageStatus::Undelivered,
    }
}

/// What goes with a message into storage, besides its role and text.
pub(crate) struct Extras {
    pub(crate) status: MessageStatus,
    pub(crate) telegram_message_id: Option<i64>,
    /// A long reply's other parts.
    pub(crate) earlier_parts: Vec<i64>,
    pub(crate) provider: Option<String>,
    pub(crate) usage: Option<TokenUsage>,
    /// The update it came with, claimed in the same call.
    pub(crate) update_id: Option<i64>,
    /// The message it replaces ("Regenerate"), marked in the same call.
    pub(crate) replaces: Option<i64>,
    /// Tokens of the content when the caller counted them already.
    pub(crate) token_count: Option<u32>,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            status: MessageStatus::Complete,
            telegram_message_id: None,
            earlier_parts: Vec::new(),
            provider: None,
            usage: None,
            update_id: None,
            replaces: None,
            token_count: None,
        }
    }
}

/// What storing a message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Stored,
    /// Its update had been handled before; nothing was stored.
    Duplicate,
    Failed,
}

/// Appends a message to the dialog in storage and, unless withheld, in memory (only if
/// stored).
pub(crate) async fn record(
    deps: &SessionDeps,
    dialog: &mut Dialog,
    role: Role,
    content: String,
    extras: Extras,
) -> Recorded {
    // PostgreSQL's text cannot hold NUL characters (SQLite's can); they carry no meaning.
    let (content, token_count) = if content.contains('\0') {
        let content = content.replace('\0', "");
        let tokens = deps.prompts.counter().count(&content);
        (content, tokens)
    } else {
        let tokens = extras
            .token_count
            .unwrap_or_else(|| deps.prompts.counter().count(&content));
        (content, tokens)
    };
    let message = NewMessage {
        role,
        token_count,
        content,
        status: extras.status,
        telegram_message_id: extras.telegram_message_id,
        earlier_parts: extras.earlier_parts,
        provider: extras.provider,
        usage: extras.usage,
        replaces: extras.replaces,
    };
    let message_id = match deps
        .store
        .append_message(dialog.id, &message, extras.update_id)
        .await
    {
        Ok(Appended::Stored { message_id }) => message_id,
        Ok(Appended::Duplicate) => return Recorded::Duplicate,
        Err(error) => {
            tracing::error!(%error, "could not store a message");
            deps.metrics.count_error("storage");
            return Recorded::Failed;
        }
    };
    dialog.last_active_at = now_millis();
    if !MessageStatus::in_dialog(message.status.as_str()) {
        return Recorded::Stored;
    }
    if role == Role::Assistant {
        dialog.persona_messages += 1;
    }
    dialog.history.push_back(HistoryEntry {
        message_id,
        telegram_message_id: message.telegram_message_id,
        earlier_parts: message.earlier_parts,
        role: message.role,
        content: message.content,
        token_count: message.token_count,
    });
    while dialog.history.len() > deps.settings.history_limit {
        dialog.history.pop_front();
    }
    Recorded::Stored
}
