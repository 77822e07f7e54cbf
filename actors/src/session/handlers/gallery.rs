//! The persona gallery, a persona's card with its stories, and starting a story.

use crate::domain::persona::Persona;
use crate::domain::texts::{excerpt, fill};
use crate::ports::{Button, DialogModes, Keyboard, Role};
use crate::session::buttons::ButtonData;
use crate::session::handlers::slots::{continue_slot, open_story};
use crate::session::keyboards::{button, gallery_keyboard, persona_label, row};
use crate::session::state::{SLOT_COUNT, SessionState};
use crate::session::turn::Turn;

/// The gallery: every persona with its tagline, and a button each.
pub(super) async fn show_gallery(turn: &Turn<'_>) {
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
pub(super) async fn show_persona(turn: &Turn<'_>, persona_id: &str) {
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
            let data = ButtonData::Story {
                persona: persona.id.clone(),
                story: story.id.clone(),
            };
            vec![button(story.title_in(turn.lang), data)]
        })
        .collect();
    rows.push(vec![button(texts.back_button, ButtonData::Gallery)]);
    turn.say(&text, Some(&Keyboard { rows })).await;
}

/// How a story is started.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StartOptions {
    /// The slot to replace; `None`: the first free slot, or ask.
    pub(super) slot: Option<u8>,
    /// The user has just confirmed being 18 or older.
    pub(super) adult_confirmed: bool,
}

/// Starts a persona's story: checks the age confirmation for adult personas, finds a slot
/// (never silently replacing a dialog), opens the dialog and sends the story's opening.
pub(super) async fn start_story(
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
            let confirm = ButtonData::AdultConfirmed {
                persona: persona.id.clone(),
                story: story.id.clone(),
            };
            let keyboard = row(vec![
                button(texts.adult_confirm_button, confirm),
                button(texts.back_button, ButtonData::Gallery),
            ]);
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
            turn.storage_failed(&error, "an age confirmation").await;
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
    open_story(turn, state, slot, persona, story, DialogModes::default()).await;
}

/// All three slots are in use: which one should the new story replace?
async fn ask_which_slot(turn: &Turn<'_>, state: &SessionState, persona: &Persona, story_id: &str) {
    let texts = turn.texts;
    let mut rows: Vec<Vec<Button>> = (1..=SLOT_COUNT)
        .filter_map(|slot| {
            let dialog = state.slot(slot)?;
            let label = dialog.describe(texts.replace_slot_button, turn.lang);
            let data = ButtonData::ReplaceSlot {
                slot,
                dialog: dialog.id,
                persona: persona.id.clone(),
                story: story_id.to_owned(),
            };
            Some(vec![button(&label, data)])
        })
        .collect();
    rows.push(vec![button(texts.cancel_button, ButtonData::Cancel)]);
    turn.say(texts.slots_full, Some(&Keyboard { rows })).await;
}
