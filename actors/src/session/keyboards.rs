//! The inline keyboards the session shows, built from [`ButtonData`].

use crate::domain::persona::Persona;
use crate::domain::texts::{Lang, Texts};
use crate::ports::{Button, Keyboard};
use crate::session::buttons::ButtonData;
use crate::session::state::SessionDeps;

/// A button that sends `data` back when pressed.
pub(crate) fn button(label: &str, data: ButtonData) -> Button {
    Button {
        label: label.to_owned(),
        data: data.encode(),
        url: None,
    }
}

/// A button that opens `url` (an invoice link).
pub(crate) fn link_button(label: &str, url: &str) -> Button {
    Button {
        label: label.to_owned(),
        data: String::new(),
        url: Some(url.to_owned()),
    }
}

/// One row of buttons.
pub(crate) fn row(buttons: Vec<Button>) -> Keyboard {
    Keyboard {
        rows: vec![buttons],
    }
}

/// The main menu: dialogs, a new dialog, settings, language.
pub(crate) fn menu_keyboard(texts: &Texts) -> Keyboard {
    Keyboard {
        rows: vec![
            vec![
                button(texts.menu_dialogs_button, ButtonData::Dialogs),
                button(texts.new_dialog_button, ButtonData::Gallery),
            ],
            vec![
                button(texts.menu_settings_button, ButtonData::Settings),
                button(texts.menu_language_button, ButtonData::LanguageMenu),
            ],
            vec![
                button(texts.shop.store_button, ButtonData::Store),
                button(texts.shop.status_button, ButtonData::Status),
            ],
        ],
    }
}

/// The two languages the bot speaks.
pub(crate) fn language_keyboard() -> Keyboard {
    row(vec![
        button("Русский", ButtonData::Language(Lang::Ru)),
        button("English", ButtonData::Language(Lang::En)),
    ])
}

/// A persona's name as buttons and lists show it (marked when 18+).
pub(crate) fn persona_label(persona: &Persona, texts: &Texts) -> String {
    let adult = if persona.adult { texts.adult_mark } else { "" };
    format!("{}{adult}", persona.name)
}

/// The persona buttons, two to a row.
pub(crate) fn gallery_keyboard(deps: &SessionDeps, lang: Lang) -> Keyboard {
    let texts = lang.texts();
    let buttons: Vec<Button> = deps
        .personas
        .all()
        .iter()
        .map(|persona| {
            let data = ButtonData::Persona {
                persona: persona.id.clone(),
            };
            button(&persona_label(persona, texts), data)
        })
        .collect();
    Keyboard {
        rows: buttons.chunks(2).map(<[Button]>::to_vec).collect(),
    }
}

/// The buttons of the newest reply: "Regenerate", and "Continue" on every n-th persona
/// message.
pub(crate) fn reply_keyboard(
    texts: &Texts,
    persona_message_number: u32,
    continue_every: u32,
) -> Keyboard {
    let mut buttons = vec![button(texts.regenerate_button, ButtonData::Regenerate)];
    if continue_every > 0 && persona_message_number % continue_every == 0 {
        buttons.push(continue_story_button(texts));
    }
    row(buttons)
}

/// "Continue": the persona goes on with the story.
pub(crate) fn continue_story_button(texts: &Texts) -> Button {
    button(texts.continue_story_button, ButtonData::ContinueStory)
}

/// "Retry" under a message the LLM could not answer.
pub(crate) fn retry_keyboard(texts: &Texts) -> Keyboard {
    row(vec![button(texts.retry_button, ButtonData::Retry)])
}
