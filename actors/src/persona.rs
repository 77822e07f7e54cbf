//! Personas: characters the bot plays, stored as one TOML file each in `personas/`.
//!
//! The fields follow the Character Card V2 spec (`chara_card_v2`): name, description,
//! personality, scenario, first_mes, mes_example, system_prompt, post_history_instructions,
//! alternate_greetings. `{{char}}` and `{{user}}` (and the older `<BOT>`/`<USER>`) are replaced
//! by the persona's and the user's names when the text is used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// Longest accepted value of any text field, in characters.
const MAX_FIELD_CHARS: usize = 20_000;

/// A validated persona.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    /// The file stem, e.g. `mira` for `personas/mira.toml`; stable, stored with dialogs.
    pub id: String,
    pub name: String,
    /// One line shown in the persona gallery.
    pub tagline: String,
    pub description: String,
    pub personality: String,
    pub scenario: String,
    pub first_mes: String,
    pub mes_example: String,
    pub system_prompt: String,
    pub post_history_instructions: String,
    pub alternate_greetings: Vec<String>,
}

/// The persona file as written on disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonaFile {
    name: String,
    #[serde(default)]
    tagline: String,
    description: String,
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
                reason: "the file name must be a lowercase id (a-z, 0-9, _ or -)".into(),
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
            description: raw.description,
            personality: raw.personality,
            scenario: raw.scenario,
            first_mes: raw.first_mes,
            mes_example: raw.mes_example,
            system_prompt: raw.system_prompt,
            post_history_instructions: raw.post_history_instructions,
            alternate_greetings: raw.alternate_greetings,
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
        for (field, value) in [
            ("tagline", &self.tagline),
            ("description", &self.description),
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
        Ok(())
    }

    /// Replaces `{{char}}`/`{{user}}` placeholders in `text`.
    pub fn substitute(&self, text: &str, user_name: &str) -> String {
        substitute(text, &self.name, user_name)
    }

    /// The greeting the persona opens a dialog with.
    pub fn greeting(&self, user_name: &str) -> String {
        self.substitute(&self.first_mes, user_name)
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
        && id.len() <= 48
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
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|error| PersonaError::Unreadable {
                    file: path.display().to_string(),
                    reason: error.to_string(),
                })?;
            personas.push(Persona::parse(&path, &text)?);
        }
        Ok(PersonaCatalog::new(personas))
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
"#;

    #[test]
    fn valid_file_parses_and_substitutes_names() {
        let persona = Persona::parse(Path::new("personas/mira.toml"), VALID).expect("valid");
        assert_eq!(persona.id, "mira");
        assert_eq!(persona.tagline, "A lighthouse keeper.");
        assert_eq!(persona.greeting("Ann"), "Hello, Ann. I am Mira.");
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
    fn bad_file_name_is_rejected() {
        let error = Persona::parse(Path::new("My Persona.toml"), VALID).expect_err("invalid");
        assert!(error.to_string().contains("My Persona.toml"), "{error}");
    }
}
