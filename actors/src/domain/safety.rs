//! Safety rules, configured as data (`config/safety.toml`): what the prompt says about safety
//! and modes, messages refused with an explanation, crisis keywords answered with support
//! instead of the LLM, and a check on what the LLM wrote.
//!
//! The checks are deliberately simple (regular expressions and keywords): they catch the
//! clear cases cheaply on every message; the model's own guidelines do the rest.

use regex::RegexSet;
use serde::Deserialize;

use crate::domain::texts::Lang;

/// A text in both of the bot's languages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Localized {
    pub en: String,
    pub ru: String,
}

impl Localized {
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::Ru => &self.ru,
        }
    }
}

/// The prompt fragments the prompt builder puts in place.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PromptRules {
    /// Always part of the prompt, right after the persona.
    pub rules: String,
    /// The mode section when `intense_mode` is off.
    pub mode_normal: String,
    /// The mode section when `intense_mode` is on.
    pub mode_intense: String,
    /// Added to the features section when `fantasy_scenes` is on.
    pub fantasy_scenes: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SafetyFile {
    prompt: PromptRules,
    #[serde(default)]
    refuse: Vec<RefuseFile>,
    crisis: CrisisFile,
    #[serde(default)]
    output: OutputFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefuseFile {
    name: String,
    patterns: Vec<String>,
    explanation: Localized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrisisFile {
    keywords: Vec<String>,
    message: Localized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFile {
    #[serde(default)]
    patterns: Vec<String>,
    /// The longest text (in bytes) an output pattern is expected to match; a streamed reply
    /// is checked piece by piece, each new piece with this much of the text before it.
    #[serde(default = "default_match_span")]
    match_span: usize,
}

impl Default for OutputFile {
    fn default() -> Self {
        OutputFile {
            patterns: Vec::new(),
            match_span: default_match_span(),
        }
    }
}

fn default_match_span() -> usize {
    512
}

/// A safety file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("safety file {file}: {reason}")]
    Invalid { file: String, reason: String },
}

#[derive(Debug)]
struct RefusalRule {
    name: String,
    patterns: RegexSet,
    explanation: Localized,
}

/// What the input check decided about a user's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Goes to the persona.
    Allow,
    /// Refused: the user gets the explanation; nothing goes to the LLM.
    Refuse { rule: &'a str, explanation: &'a str },
    /// The user may be in danger: a supportive message with help resources instead of the
    /// persona's reply.
    Crisis { message: &'a str },
}

/// The loaded safety rules.
#[derive(Debug)]
pub struct SafetyPolicy {
    prompt: PromptRules,
    refusals: Vec<RefusalRule>,
    crisis_keywords: Vec<String>,
    crisis_message: Localized,
    output: RegexSet,
    /// See `OutputFile::match_span`.
    match_span: usize,
}

impl SafetyPolicy {
    /// Parses and validates a safety file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<SafetyPolicy, SafetyError> {
        let invalid = |reason: String| SafetyError::Invalid {
            file: file.to_owned(),
            reason,
        };
        let raw: SafetyFile =
            toml::from_str(text).map_err(|error| invalid(error.message().trim().to_owned()))?;
        if raw.prompt.rules.trim().is_empty() {
            return Err(invalid("`prompt.rules` must not be empty".into()));
        }
        let mut refusals = Vec::with_capacity(raw.refuse.len());
        for rule in raw.refuse {
            if rule.patterns.is_empty() {
                return Err(invalid(format!(
                    "refuse rule {:?} has no patterns",
                    rule.name
                )));
            }
            let patterns = RegexSet::new(&rule.patterns).map_err(|error| {
                invalid(format!("refuse rule {:?}: bad pattern: {error}", rule.name))
            })?;
            refusals.push(RefusalRule {
                name: rule.name,
                patterns,
                explanation: rule.explanation,
            });
        }
        let crisis_keywords: Vec<String> = raw
            .crisis
            .keywords
            .iter()
            .map(|keyword| keyword.trim().to_lowercase())
            .filter(|keyword| !keyword.is_empty())
            .collect();
        if crisis_keywords.is_empty() {
            return Err(invalid("`crisis.keywords` must not be empty".into()));
        }
        let output = RegexSet::new(&raw.output.patterns)
            .map_err(|error| invalid(format!("output: bad pattern: {error}")))?;
        Ok(SafetyPolicy {
            prompt: raw.prompt,
            refusals,
            crisis_keywords,
            crisis_message: raw.crisis.message,
            output,
            match_span: raw.output.match_span.max(1),
        })
    }

    /// Reads and parses a safety file.
    pub fn load(path: &std::path::Path) -> Result<SafetyPolicy, SafetyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| SafetyError::Invalid {
            file: file.clone(),
            reason: error.to_string(),
        })?;
        SafetyPolicy::parse(&file, &text)
    }

    pub fn prompt(&self) -> &PromptRules {
        &self.prompt
    }

    /// Checks a user's message: crisis keywords first (support matters more than a
    /// refusal), then the refusal rules.
    pub fn check_input(&self, text: &str, lang: Lang) -> Verdict<'_> {
        let lowered = text.to_lowercase();
        if self
            .crisis_keywords
            .iter()
            .any(|keyword| lowered.contains(keyword.as_str()))
        {
            return Verdict::Crisis {
                message: self.crisis_message.get(lang),
            };
        }
        for rule in &self.refusals {
            if rule.patterns.is_match(text) {
                return Verdict::Refuse {
                    rule: &rule.name,
                    explanation: rule.explanation.get(lang),
                };
            }
        }
        Verdict::Allow
    }

    /// Whether the LLM's whole text may be shown.
    pub fn output_allowed(&self, text: &str) -> bool {
        !self.output.is_match(text)
    }

    /// A check of a reply as it streams in, which reads each new piece once (with a little
    /// of the text before it) instead of the whole reply again on every piece.
    pub fn output_scan(&self) -> OutputScan<'_> {
        OutputScan {
            policy: self,
            checked: 0,
        }
    }
}

/// The output check of one streamed reply; see [`SafetyPolicy::output_scan`].
///
/// A match is found when it lies within the new text and the `match_span` bytes before it
/// (moved back to the start of a word, so `\b` reads as it would on the whole text). A
/// pattern that can match more than `match_span` bytes is still caught by the check of the
/// whole reply once it is complete.
#[derive(Debug)]
pub struct OutputScan<'a> {
    policy: &'a SafetyPolicy,
    /// Bytes of the reply checked so far.
    checked: usize,
}

impl OutputScan<'_> {
    /// Whether `text`, the reply so far (what was checked before plus what came since), may
    /// be shown.
    pub fn allows(&mut self, text: &str) -> bool {
        let start = if self.checked > text.len() {
            0
        } else {
            window_start(text, self.checked.saturating_sub(self.policy.match_span))
        };
        self.checked = text.len();
        self.policy.output_allowed(&text[start..])
    }
}

/// Where a window that should begin at `at` begins: at a character boundary, moved back to
/// just after a white space within 64 bytes (else the boundary itself).
fn window_start(text: &str, at: usize) -> usize {
    let mut start = at.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let floor = start.saturating_sub(64);
    text[floor..start]
        .rfind(char::is_whitespace)
        .map_or(start, |space| floor + space)
}

#[cfg(test)]
pub(crate) const TEST_POLICY: &str = r#"
[prompt]
rules = "Never describe harm to minors."
mode_normal = "Keep the tone gentle."
mode_intense = "Drama may be intense."
fantasy_scenes = "Magic and fantastic creatures are welcome."

[[refuse]]
name = "minors"
patterns = ["(?i)\\bsexy? child"]
explanation = { en = "I will not write that.", ru = "Я не буду это писать." }

[crisis]
keywords = ["kill myself", "покончить с собой"]
message = { en = "You are not alone. Call 112.", ru = "Вы не одни. Позвоните 112." }

[output]
patterns = ["(?i)forbidden-word", "(?i)\\bsecret\\b.{0,20}\\bplan\\b"]
match_span = 64
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SafetyPolicy {
        SafetyPolicy::parse("safety.toml", TEST_POLICY).expect("valid policy")
    }

    #[test]
    fn crisis_keywords_get_support_in_the_users_language() {
        let policy = policy();
        assert_eq!(
            policy.check_input("I want to KILL MYSELF tonight", Lang::En),
            Verdict::Crisis {
                message: "You are not alone. Call 112."
            }
        );
        assert_eq!(
            policy.check_input("хочу покончить с собой", Lang::Ru),
            Verdict::Crisis {
                message: "Вы не одни. Позвоните 112."
            }
        );
        assert_eq!(
            policy.check_input("a quiet evening", Lang::En),
            Verdict::Allow
        );
    }

    #[test]
    fn refusal_patterns_name_the_rule_and_explain() {
        let policy = policy();
        assert_eq!(
            policy.check_input("write about a sexy child", Lang::En),
            Verdict::Refuse {
                rule: "minors",
                explanation: "I will not write that."
            }
        );
    }

    #[test]
    fn output_check_and_broken_files() {
        let policy = policy();
        assert!(!policy.output_allowed("this has a Forbidden-Word in it"));
        assert!(policy.output_allowed("a harmless reply"));
        let broken = TEST_POLICY.replace("(?i)forbidden-word", "([unclosed");
        let error = SafetyPolicy::parse("safety.toml", &broken).expect_err("bad regex");
        assert!(error.to_string().contains("output: bad pattern"), "{error}");
        let missing = TEST_POLICY.replace("[crisis]", "[crisis_typo]");
        let error = SafetyPolicy::parse("safety.toml", &missing).expect_err("missing");
        assert!(error.to_string().contains("safety.toml"), "{error}");
    }

    #[test]
    fn a_streamed_reply_is_checked_piece_by_piece_across_piece_boundaries() {
        let policy = policy();
        let mut scan = policy.output_scan();
        let mut reply = String::new();
        for piece in [
            "The old map ",
            "hid a sec",
            "ret ",
            "— and then the ",
            "plan began.",
        ] {
            reply.push_str(piece);
            if !scan.allows(&reply) {
                assert!(reply.ends_with("plan began."), "caught too early: {reply}");
                return;
            }
        }
        panic!("a match across pieces was missed: {reply}");
    }

    #[test]
    fn a_long_reply_is_read_once_and_old_text_is_not_rescanned() {
        let policy = policy();
        let mut scan = policy.output_scan();
        // A match far behind the window is the whole-text check's job, not the stream's.
        let mut reply = String::from("forbidden-word ") + &"calm. ".repeat(20);
        scan.checked = reply.len();
        for _ in 0..100 {
            reply.push_str("a calm sentence without trouble. ");
            assert!(scan.allows(&reply), "the old match was read again");
        }
        assert!(
            !policy.output_allowed(&reply),
            "the whole-text check still finds it"
        );
        // A word cut by the window's start is read whole: "unsecret" is no match of \bsecret.
        let mut scan = policy.output_scan();
        scan.checked = 68;
        let text = format!("a unsecret plan{}", "z".repeat(60));
        assert!(policy.output_allowed(&text));
        assert!(scan.allows(&text), "a word cut by the window is read whole");
    }
}
