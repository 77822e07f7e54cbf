//! Property tests of what users and operators hand vitte: persona files, Character Card V2
//! imports and safety files. Whatever the input, an answer (a value or an error
//! naming the problem), never a panic.

use proptest::prelude::*;

use crate::domain::persona::{Persona, import_character_card};
use crate::domain::safety::SafetyPolicy;

/// A valid persona file, for mutations.
const PERSONA: &str = "name = \"Mira\"\ndescription = \"Keeps a lighthouse.\"\n\
first_mes = \"Hi\"\n[[stories]]\nid = \"first\"\ntitle = \"First\"\npremise = \"A storm.\"\n\
opening_message = \"Hi {{user}}\"\n";

/// A valid Character Card V2, for mutations.
const CARD: &str = r#"{"spec":"chara_card_v2","spec_version":"2.0","data":{"name":"Ada",
"description":"An engineer.","personality":"curious","scenario":"a workshop",
"first_mes":"Hello {{user}}","mes_example":"","creator_notes":"","system_prompt":"",
"post_history_instructions":"","alternate_greetings":["Hi again"],"tags":[],"creator":"",
"character_version":"1","extensions":{}}}"#;

/// `text` with `count` bytes-ranges replaced by `junk` (kept on character boundaries).
fn mutate(text: &str, cuts: &[(usize, usize)], junk: &str) -> String {
    let mut out = text.to_owned();
    for (at, len) in cuts {
        let mut start = at % (out.len() + 1);
        while !out.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + len % 16).min(out.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.replace_range(start..end, junk);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_persona_file_is_read_or_refused_with_a_reason(text in ".{0,400}") {
        if let Err(error) = Persona::parse(std::path::Path::new("any.toml"), &text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_mutated_persona_file_is_read_or_refused_with_a_reason(
        cuts in proptest::collection::vec((0usize..400, 0usize..16), 1..4),
        junk in "[\\[\\]{}=\"\\n a-z0-9#\\\\é]{0,12}",
    ) {
        let text = mutate(PERSONA, &cuts, &junk);
        if let Err(error) = Persona::parse(std::path::Path::new("mira.toml"), &text) {
            prop_assert!(error.to_string().contains("mira.toml"), "{error}");
        }
    }

    #[test]
    fn any_character_card_is_imported_or_refused_with_a_reason(text in ".{0,300}") {
        if let Err(error) = import_character_card(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_mutated_character_card_is_imported_or_refused_with_a_reason(
        cuts in proptest::collection::vec((0usize..500, 0usize..16), 1..4),
        junk in "[\\[\\]{}:,\"a-z0-9 \\\\]{0,12}",
    ) {
        let text = mutate(CARD, &cuts, &junk);
        if let Err(error) = import_character_card(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_mutated_safety_file_is_read_or_refused_with_a_reason(
        cuts in proptest::collection::vec((0usize..800, 0usize..16), 1..4),
        junk in "[\\[\\]{}()=\"\\n a-z0-9.*?\\\\]{0,12}",
    ) {
        let text = mutate(crate::domain::safety::TEST_POLICY, &cuts, &junk);
        if let Err(error) = SafetyPolicy::parse("safety.toml", &text) {
            prop_assert!(error.to_string().starts_with("safety file safety.toml"));
        }
    }
}
