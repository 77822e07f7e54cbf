//! Personas: characters the bot plays, stored as one TOML file each in `personas/`.
//!
//! The fields follow the Character Card V2 spec (`chara_card_v2`): name, description,
//! personality, scenario, first_mes, mes_example, system_prompt, post_history_instructions,
//! alternate_greetings. `{{char}}` and `{{user}}` (and the older `<BOT>`/`<USER>`) are replaced
//! by the persona's and the user's names when the text is used.
//!
//! Our own additions: `tagline` (one line for the gallery), `adult` (the user must confirm
//! being 18 or older before the first dialog) and `[[stories]]`: story cards with an `id`, a
//! `title`, a `premise` (added to the prompt) and an `opening_message` (the persona's first
//! message). Every persona has at least one story; a card imported without stories gets one
//! made of its scenario and greeting (see `vitte persona import`).
//!
//! What users read can also be given in Russian (`tagline_ru`, `description_ru`, and per
//! story `title_ru`, `opening_message_ru`); Russian-speaking users see those when present. The
//! prompt uses the original fields: the model answers in the user's language anyway.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::domain::texts::Lang;

/// Longest accepted value of any text field, in characters.
const MAX_FIELD_CHARS: usize = 20_000;
/// Longest persona id, and longest story id: both travel in Telegram button data (at most
/// 64 bytes, with a slot and a dialog id beside them).
pub const MAX_ID_CHARS: usize = 24;
pub const MAX_STORY_ID_CHARS: usize = 20;
/// Longest story title (it is a button label).
const MAX_TITLE_CHARS: usize = 60;

/// One story a persona can play: where the dialog starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Story {
    /// Unique within the persona; stored with dialogs.
    pub id: String,
    pub title: String,
    /// The situation, added to the prompt of every message of the dialog.
    pub premise: String,
    /// The persona's first message of the dialog.
    pub opening_message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_ru: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening_message_ru: Option<String>,
}

/// The Russian variant when the user reads Russian and one is given, else the original.
fn localized<'a>(original: &'a str, russian: Option<&'a String>, lang: Lang) -> &'a str {
    match (lang, russian) {
        (Lang::Ru, Some(russian)) if !russian.trim().is_empty() => russian,
        _ => original,
    }
}

impl Story {
    /// The title in the user's language.
    pub fn title_in(&self, lang: Lang) -> &str {
        localized(&self.title, self.title_ru.as_ref(), lang)
    }

    /// The opening message in the user's language (placeholders not yet replaced).
    pub fn opening_in(&self, lang: Lang) -> &str {
        localized(
            &self.opening_message,
            self.opening_message_ru.as_ref(),
            lang,
        )
    }
}

/// A validated persona.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    /// The file stem, e.g. `mira` for `personas/mira.toml`; stable, stored with dialogs.
    pub id: String,
    pub name: String,
    /// One line shown in the persona gallery.
    pub tagline: String,
    pub tagline_ru: Option<String>,
    pub description: String,
    pub description_ru: Option<String>,
    pub personality: String,
    pub scenario: String,
    pub first_mes: String,
    pub mes_example: String,
    pub system_prompt: String,
    pub post_history_instructions: String,
    pub alternate_greetings: Vec<String>,
    /// Shown only after the user confirms being 18 or older.
    pub adult: bool,
    /// At least one.
    pub stories: Vec<Story>,
}

/// The persona file as written on disk.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct PersonaFile {
    name: String,
    #[serde(default)]
    tagline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tagline_ru: Option<String>,
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description_ru: Option<String>,
    #[serde(default)]
    personality: String,
    #[serde(default)]
    scenario: String,
    first_mes: String,
    #[serde(default)]
    mes_example: String,
    #[serde(default)]
    system_prompt: String,
    #[serde(default)]
    post_history_instructions: String,
    #[serde(default)]
    alternate_greetings: Vec<String>,
    #[serde(default)]
    adult: bool,
    #[serde(default)]
    stories: Vec<Story>,
}

/// A Character Card V2 (`"spec": "chara_card_v2"`), as exported by SillyTavern and others.
#[derive(Debug, Deserialize)]
struct CharacterCardV2 {
    spec: String,
    data: CardData,
}

#[derive(Debug, Deserialize)]
struct CardData {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    personality: String,
    #[serde(default)]
    scenario: String,
    #[serde(default)]
    first_mes: String,
    #[serde(default)]
    mes_example: String,
    #[serde(default)]
    creator_notes: String,
    #[serde(default)]
    system_prompt: String,
    #[serde(default)]
    post_history_instructions: String,
    #[serde(default)]
    alternate_greetings: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// A persona converted from a Character Card V2: its id (from the name) and the TOML text of
/// its persona file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPersona {
    pub id: String,
    pub toml: String,
}

/// Converts a Character Card V2 JSON into a persona file. The card's greeting becomes the
/// first story (its premise is the card's scenario) and each alternate greeting another one.
/// Cards tagged `nsfw` (or `adult`) are marked adult. The result is validated like any file.
pub fn import_character_card(json: &str) -> Result<ImportedPersona, PersonaError> {
    let unreadable = |reason: String| PersonaError::Unreadable {
        file: "character card".into(),
        reason,
    };
    let card: CharacterCardV2 = serde_json::from_str(json)
        .map_err(|error| unreadable(format!("not a Character Card V2 JSON: {error}")))?;
    if card.spec != "chara_card_v2" {
        return Err(unreadable(format!(
            "spec is {:?}; only \"chara_card_v2\" cards are supported",
            card.spec
        )));
    }
    let data = card.data;
    let id: String = slug(&data.name);
    if id.is_empty() {
        return Err(unreadable("the card's name gives no usable id".into()));
    }
    let premise = if data.scenario.trim().is_empty() {
        "{{char}} meets {{user}}.".to_owned()
    } else {
        data.scenario.clone()
    };
    let mut stories = vec![Story {
        id: "first-meeting".into(),
        title: "First meeting".into(),
        premise: premise.clone(),
        opening_message: data.first_mes.clone(),
        title_ru: Some("Первая встреча".into()),
        opening_message_ru: None,
    }];
    for (index, greeting) in data.alternate_greetings.iter().enumerate() {
        stories.push(Story {
            id: format!("opening-{}", index + 2),
            title: format!("Another beginning ({})", index + 2),
            premise: premise.clone(),
            opening_message: greeting.clone(),
            title_ru: Some(format!("Другое начало ({})", index + 2)),
            opening_message_ru: None,
        });
    }
    let adult = data
        .tags
        .iter()
        .any(|tag| matches!(tag.to_lowercase().as_str(), "nsfw" | "adult" | "18+"));
    let file = PersonaFile {
        tagline: first_sentence(if data.creator_notes.trim().is_empty() {
            &data.description
        } else {
            &data.creator_notes
        }),
        name: data.name,
        tagline_ru: None,
        description: data.description,
        description_ru: None,
        personality: data.personality,
        scenario: data.scenario,
        first_mes: data.first_mes,
        mes_example: data.mes_example,
        system_prompt: data.system_prompt,
        post_history_instructions: data.post_history_instructions,
        alternate_greetings: data.alternate_greetings,
        adult,
        stories,
    };
    let toml = toml::to_string(&file).map_err(|error| unreadable(error.to_string()))?;
    // The same checks as a hand-written file, so an import never yields a file that fails.
    Persona::parse(Path::new(&format!("{id}.toml")), &toml)?;
    Ok(ImportedPersona { id, toml })
}

/// A lowercase id from a name: ASCII letters and digits kept, Cyrillic transliterated, runs
/// of anything else become one `-`, at most [`MAX_ID_CHARS`].
fn slug(name: &str) -> String {
    let mut id = String::new();
    for character in name.chars().flat_map(char::to_lowercase) {
        if character.is_ascii_alphanumeric() {
            id.push(character);
        } else if let Some(latin) = transliterate(character) {
            id.push_str(latin);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    let id: String = id.chars().take(MAX_ID_CHARS).collect();
    id.trim_end_matches('-').to_owned()
}

/// Latin letters for a lowercase Russian (and Ukrainian) letter.
fn transliterate(character: char) -> Option<&'static str> {
    const TABLE: [(char, &str); 37] = [
        ('а', "a"),
        ('б', "b"),
        ('в', "v"),
        ('г', "g"),
        ('д', "d"),
        ('е', "e"),
        ('ё', "e"),
        ('ж', "zh"),
        ('з', "z"),
        ('и', "i"),
        ('й', "y"),
        ('к', "k"),
        ('л', "l"),
        ('м', "m"),
        ('н', "n"),
        ('о', "o"),
        ('п', "p"),
        ('р', "r"),
        ('с', "s"),
        ('т', "t"),
        ('у', "u"),
        ('ф', "f"),
        ('х', "kh"),
        ('ц', "ts"),
        ('ч', "ch"),
        ('ш', "sh"),
        ('щ', "shch"),
        ('ъ', ""),
        ('ы', "y"),
        ('ь', ""),
        ('э', "e"),
        ('ю', "yu"),
        ('я', "ya"),
        ('і', "i"),
        ('ї', "yi"),
        ('є', "ye"),
        ('ґ', "g"),
    ];
    TABLE
        .iter()
        .find(|(cyrillic, _)| *cyrillic == character)
        .map(|(_, latin)| *latin)
}

/// A persona file that cannot be used, naming the file and the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PersonaError {
    #[error("persona file {file}: field `{field}`: {reason}")]
    InvalidField {
        file: String,
        field: String,
        reason: String,
    },
    #[error("persona file {file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("persona directory {dir}: {reason}")]
    Directory { dir: String, reason: String },
}

impl Persona {
    /// Parses and validates one persona file's text. `file` names it in errors; its stem
    /// becomes the persona id.
    pub fn parse(file: &Path, text: &str) -> Result<Persona, PersonaError> {
        let file_name = file.display().to_string();
        let id = file
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|stem| is_valid_id(stem))
            .ok_or_else(|| PersonaError::Unreadable {
                file: file_name.clone(),
                reason: "the file name must be a lowercase id of at most 24 characters \
                         (a-z, 0-9, _ or -)"
                    .into(),
            })?
            .to_owned();
        let raw: PersonaFile =
            toml::from_str(text).map_err(|error| toml_error(&file_name, text, &error))?;
        let persona = Persona {
            id,
            tagline: if raw.tagline.trim().is_empty() {
                first_sentence(&raw.description)
            } else {
                raw.tagline.trim().to_owned()
            },
            name: raw.name.trim().to_owned(),
            tagline_ru: raw.tagline_ru.map(|tagline| tagline.trim().to_owned()),
            description: raw.description,
            description_ru: raw.description_ru,
            personality: raw.personality,
            scenario: raw.scenario,
            first_mes: raw.first_mes,
            mes_example: raw.mes_example,
            system_prompt: raw.system_prompt,
            post_history_instructions: raw.post_history_instructions,
            alternate_greetings: raw.alternate_greetings,
            adult: raw.adult,
            stories: raw.stories,
        };
        persona.validate(&file_name)?;
        Ok(persona)
    }

    fn validate(&self, file: &str) -> Result<(), PersonaError> {
        let invalid = |field: &str, reason: &str| PersonaError::InvalidField {
            file: file.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        for (field, value) in [
            ("name", &self.name),
            ("description", &self.description),
            ("first_mes", &self.first_mes),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if self.name.chars().count() > 64 {
            return Err(invalid("name", "must be at most 64 characters"));
        }
        let tagline_ru = self.tagline_ru.clone().unwrap_or_default();
        let description_ru = self.description_ru.clone().unwrap_or_default();
        for (field, value) in [
            ("tagline", &self.tagline),
            ("tagline_ru", &tagline_ru),
            ("description", &self.description),
            ("description_ru", &description_ru),
            ("personality", &self.personality),
            ("scenario", &self.scenario),
            ("first_mes", &self.first_mes),
            ("mes_example", &self.mes_example),
            ("system_prompt", &self.system_prompt),
            ("post_history_instructions", &self.post_history_instructions),
        ] {
            if value.chars().count() > MAX_FIELD_CHARS {
                return Err(invalid(field, "is longer than 20000 characters"));
            }
        }
        if self
            .alternate_greetings
            .iter()
            .any(|greeting| greeting.trim().is_empty())
        {
            return Err(invalid("alternate_greetings", "contains an empty greeting"));
        }
        if self.stories.is_empty() {
            return Err(invalid(
                "stories",
                "at least one [[stories]] entry is needed",
            ));
        }
        for (index, story) in self.stories.iter().enumerate() {
            let field = |name: &str| format!("stories[{index}].{name}");
            let story_invalid = |name: &str, reason: &str| PersonaError::InvalidField {
                file: file.to_owned(),
                field: field(name),
                reason: reason.to_owned(),
            };
            if !is_valid_id(&story.id) || story.id.len() > MAX_STORY_ID_CHARS {
                return Err(story_invalid(
                    "id",
                    "must be a lowercase id of at most 20 characters (a-z, 0-9, _ or -)",
                ));
            }
            if self.stories[..index]
                .iter()
                .any(|other| other.id == story.id)
            {
                return Err(story_invalid("id", "is used by an earlier story"));
            }
            for (name, value) in [
                ("title", &story.title),
                ("premise", &story.premise),
                ("opening_message", &story.opening_message),
            ] {
                if value.trim().is_empty() {
                    return Err(story_invalid(name, "must not be empty"));
                }
                if value.chars().count() > MAX_FIELD_CHARS {
                    return Err(story_invalid(name, "is longer than 20000 characters"));
                }
            }
            if story.title.chars().count() > MAX_TITLE_CHARS
                || story
                    .title_ru
                    .as_ref()
                    .is_some_and(|title| title.chars().count() > MAX_TITLE_CHARS)
            {
                return Err(story_invalid("title", "must be at most 60 characters"));
            }
        }
        Ok(())
    }

    /// The gallery line in the user's language.
    pub fn tagline_in(&self, lang: Lang) -> &str {
        localized(&self.tagline, self.tagline_ru.as_ref(), lang)
    }

    /// The description in the user's language (placeholders not yet replaced).
    pub fn description_in(&self, lang: Lang) -> &str {
        localized(&self.description, self.description_ru.as_ref(), lang)
    }

    /// The story with `id`.
    pub fn story(&self, id: &str) -> Option<&Story> {
        self.stories.iter().find(|story| story.id == id)
    }

    /// Replaces `{{char}}`/`{{user}}` placeholders in `text`.
    pub fn substitute(&self, text: &str, user_name: &str) -> String {
        substitute(text, &self.name, user_name)
    }
}

/// Replaces the Character Card placeholders for the character's and the user's names.
pub fn substitute(text: &str, char_name: &str, user_name: &str) -> String {
    let mut out = text.to_owned();
    for placeholder in ["{{char}}", "{{Char}}", "{{CHAR}}", "<BOT>", "<bot>"] {
        out = out.replace(placeholder, char_name);
    }
    for placeholder in ["{{user}}", "{{User}}", "{{USER}}", "<USER>", "<user>"] {
        out = out.replace(placeholder, user_name);
    }
    out
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn first_sentence(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("").trim();
    let end = line.find(". ").map(|index| index + 1).unwrap_or(line.len());
    line[..end].chars().take(120).collect()
}

/// Turns a TOML error into one naming the field: serde names missing fields itself; for other
/// errors the key is read from the line the error points at.
fn toml_error(file: &str, text: &str, error: &toml::de::Error) -> PersonaError {
    let message = error.message().trim().to_owned();
    let field = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"))
        .map(str::to_owned)
        .or_else(|| {
            let start = error.span()?.start;
            let line_start = text[..start.min(text.len())]
                .rfind('\n')
                .map_or(0, |index| index + 1);
            let line = text[line_start..].lines().next()?;
            let key = line.split('=').next()?.trim();
            (!key.is_empty() && is_key(key)).then(|| key.to_owned())
        });
    match field {
        Some(field) => PersonaError::InvalidField {
            file: file.to_owned(),
            field,
            reason: message,
        },
        None => PersonaError::Unreadable {
            file: file.to_owned(),
            reason: message,
        },
    }
}

fn is_key(key: &str) -> bool {
    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// All personas, in file-name order.
#[derive(Debug, Clone, Default)]
pub struct PersonaCatalog {
    personas: Vec<Arc<Persona>>,
}

impl PersonaCatalog {
    pub fn new(personas: Vec<Persona>) -> PersonaCatalog {
        PersonaCatalog {
            personas: personas.into_iter().map(Arc::new).collect(),
        }
    }

    /// Loads and validates every `*.toml` file of `dir`; the first bad file stops the load.
    pub fn load_dir(dir: &Path) -> Result<PersonaCatalog, PersonaError> {
        let (personas, mut problems) = PersonaCatalog::check_dir(dir)?;
        if !problems.is_empty() {
            return Err(problems.remove(0));
        }
        Ok(PersonaCatalog::new(personas))
    }

    /// Reads every `*.toml` file of `dir` and reports all problems, not just the first: the
    /// valid personas and one error per bad file. Fails only if the directory is unusable.
    pub fn check_dir(dir: &Path) -> Result<(Vec<Persona>, Vec<PersonaError>), PersonaError> {
        let dir_error = |reason: String| PersonaError::Directory {
            dir: dir.display().to_string(),
            reason,
        };
        let entries = std::fs::read_dir(dir).map_err(|error| dir_error(error.to_string()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(dir_error("holds no persona files (*.toml)".into()));
        }
        let mut personas = Vec::with_capacity(files.len());
        let mut problems = Vec::new();
        for path in files {
            let parsed = std::fs::read_to_string(&path)
                .map_err(|error| PersonaError::Unreadable {
                    file: path.display().to_string(),
                    reason: error.to_string(),
                })
                .and_then(|text| Persona::parse(&path, &text));
            match parsed {
                Ok(persona) => personas.push(persona),
                Err(error) => problems.push(error),
            }
        }
        Ok((personas, problems))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Persona>> {
        self.personas
            .iter()
            .find(|persona| persona.id == id)
            .cloned()
    }

    pub fn all(&self) -> &[Arc<Persona>] {
        &self.personas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
name = "Mira"
description = "A lighthouse keeper. She talks to ships."
personality = "calm, wry"
scenario = "{{user}} arrives at the lighthouse."
first_mes = "Hello, {{user}}. I am {{char}}."

[[stories]]
id = "storm"
title = "The storm"
premise = "{{user}} washes ashore."
opening_message = "*The door opens.* Inside, {{user}}."
"#;

    #[test]
    fn valid_file_parses_and_substitutes_names() {
        let persona = Persona::parse(Path::new("personas/mira.toml"), VALID).expect("valid");
        assert_eq!(persona.id, "mira");
        assert_eq!(persona.tagline, "A lighthouse keeper.");
        assert_eq!(
            persona.substitute(&persona.first_mes, "Ann"),
            "Hello, Ann. I am Mira."
        );
        assert_eq!(
            persona.substitute(&persona.scenario, "Ann"),
            "Ann arrives at the lighthouse."
        );
    }

    #[test]
    fn missing_field_is_named() {
        let text = VALID.replace("first_mes = \"Hello, {{user}}. I am {{char}}.\"", "");
        let error = Persona::parse(Path::new("p/mira.toml"), &text).expect_err("invalid");
        assert!(
            matches!(&error, PersonaError::InvalidField { file, field, .. } if file == "p/mira.toml" && field == "first_mes"),
            "{error}"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = VALID.replace("personality = \"calm, wry\"", "personality = 5");
        let error = Persona::parse(Path::new("p/mira.toml"), &text).expect_err("invalid");
        assert!(
            matches!(&error, PersonaError::InvalidField { field, .. } if field == "personality"),
            "{error}"
        );
    }

    #[test]
    fn empty_required_field_and_unknown_field_are_rejected() {
        let empty = VALID.replace("name = \"Mira\"", "name = \"  \"");
        let error = Persona::parse(Path::new("mira.toml"), &empty).expect_err("invalid");
        assert!(error.to_string().contains("field `name`"), "{error}");
        let unknown = format!("{VALID}\nmood = \"x\"\n");
        let error = Persona::parse(Path::new("mira.toml"), &unknown).expect_err("invalid");
        assert!(error.to_string().contains("field `mood`"), "{error}");
    }

    #[test]
    fn stories_are_read_and_checked() {
        let persona = Persona::parse(Path::new("mira.toml"), VALID).expect("valid");
        assert_eq!(persona.stories.len(), 1);
        assert_eq!(
            persona.story("storm").map(|s| s.title.as_str()),
            Some("The storm")
        );
        assert!(!persona.adult);
        let no_stories = VALID
            .split("[[stories]]")
            .next()
            .unwrap_or_default()
            .to_owned();
        let error = Persona::parse(Path::new("mira.toml"), &no_stories).expect_err("invalid");
        assert!(error.to_string().contains("field `stories`"), "{error}");
        let twice = format!(
            "{VALID}\n[[stories]]\nid = \"storm\"\ntitle = \"Again\"\npremise = \"p\"\nopening_message = \"o\"\n"
        );
        let error = Persona::parse(Path::new("mira.toml"), &twice).expect_err("invalid");
        assert!(error.to_string().contains("stories[1].id"), "{error}");
        let untitled = VALID.replace("title = \"The storm\"", "title = \"\"");
        let error = Persona::parse(Path::new("mira.toml"), &untitled).expect_err("invalid");
        assert!(error.to_string().contains("stories[0].title"), "{error}");
    }

    #[test]
    fn a_character_card_v2_becomes_a_valid_persona_file() {
        let card = r#"{"spec":"chara_card_v2","spec_version":"2.0","data":{
            "name":"Captain Rook","description":"{{char}} commands an airship.",
            "personality":"bold","scenario":"{{user}} stows away.","first_mes":"Who goes there?",
            "mes_example":"","creator_notes":"A sky pirate with a code. Loves maps.",
            "system_prompt":"","post_history_instructions":"",
            "alternate_greetings":["Welcome aboard, {{user}}."],"tags":["adventure"],
            "creator":"someone","character_version":"1","extensions":{}}}"#;
        let imported = import_character_card(card).expect("imported");
        assert_eq!(imported.id, "captain-rook");
        let persona =
            Persona::parse(Path::new("captain-rook.toml"), &imported.toml).expect("valid");
        assert_eq!(persona.name, "Captain Rook");
        assert_eq!(persona.tagline, "A sky pirate with a code.");
        assert_eq!(persona.stories.len(), 2);
        assert_eq!(persona.stories[0].opening_message, "Who goes there?");
        assert_eq!(persona.stories[0].premise, "{{user}} stows away.");
        assert_eq!(
            persona.stories[1].opening_message,
            "Welcome aboard, {{user}}."
        );
        let v1 = r#"{"name":"Old","description":"d","first_mes":"hi"}"#;
        let error = import_character_card(v1).expect_err("not v2");
        assert!(error.to_string().contains("Character Card V2"), "{error}");
        let cyrillic = card.replace("Captain Rook", "Капитан Ёж");
        assert_eq!(
            import_character_card(&cyrillic).expect("imported").id,
            "kapitan-ezh"
        );
        let wrong_spec = card.replace("chara_card_v2", "chara_card_v3");
        let error = import_character_card(&wrong_spec).expect_err("not v2");
        assert!(error.to_string().contains("chara_card_v3"), "{error}");
    }

    #[test]
    fn bad_file_name_is_rejected() {
        let error = Persona::parse(Path::new("My Persona.toml"), VALID).expect_err("invalid");
        assert!(error.to_string().contains("My Persona.toml"), "{error}");
    }
}
