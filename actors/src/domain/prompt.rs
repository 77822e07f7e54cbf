//! Prompt building: a persona playing a story, the safety rules and modes, and a dialog's
//! history become an LLM request that fits the model's context window.

use crate::domain::persona::{Persona, Story};
use crate::domain::safety::PromptRules;
use crate::ports::{ChatMessage, DialogModes, HistoryEntry, Role};

/// Tokens the chat format adds to every message (role markers and separators).
const TOKENS_PER_MESSAGE: usize = 4;

/// Counts tokens the way OpenAI-style models do (cl100k_base via tiktoken-rs).
#[derive(Clone, Copy)]
pub struct TokenCounter {
    bpe: &'static tiktoken_rs::CoreBPE,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCounter(cl100k_base)")
    }
}

impl Default for TokenCounter {
    fn default() -> Self {
        TokenCounter::new()
    }
}

impl TokenCounter {
    /// The first call builds the encoder (tens of milliseconds); call it at start-up, not on
    /// an arbiter that serves users.
    pub fn new() -> TokenCounter {
        TokenCounter {
            bpe: tiktoken_rs::cl100k_base_singleton(),
        }
    }

    pub fn count(&self, text: &str) -> u32 {
        u32::try_from(self.bpe.encode_ordinary(text).len()).unwrap_or(u32::MAX)
    }
}

/// How much of the context window a prompt may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    /// The model's context window.
    pub context_tokens: usize,
    /// Kept free for the reply.
    pub reply_tokens: usize,
}

impl TokenBudget {
    fn prompt_tokens(&self) -> usize {
        self.context_tokens.saturating_sub(self.reply_tokens)
    }
}

/// What a dialog's prompt is made of, besides its history.
#[derive(Debug, Clone, Copy)]
pub struct PromptContext<'a> {
    pub persona: &'a Persona,
    pub story: &'a Story,
    pub user_name: &'a str,
    pub modes: DialogModes,
}

/// What changes from one reply to the next besides the history: what memory recalled for
/// this message, and the summary standing in for the history's earlier part.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnContext<'a> {
    /// The memory part (one memory per line); left out when empty.
    pub memory: &'a str,
    /// The summary of the story before the history given, with its token count.
    pub summary: Option<(&'a str, u32)>,
    /// A one-off instruction after everything else ("go on with the story").
    pub directive: Option<&'a str>,
}

/// Builds prompts in a fixed order:
///
/// 1. the persona (its system prompt, description, personality, scenario, examples);
/// 2. the safety rules;
/// 3. the mode (normal or intense);
/// 4. the story (title and premise);
/// 5. enabled features (fantasy scenes);
/// 6. long-term memory recalled for this message (when there is any);
/// 7. the summary of the story's earlier part (when the history outgrew the budget);
/// 8. the message history, as much as fits, newest kept;
/// 9. the post-history instructions (and a one-off directive, e.g. "go on with the story").
///
/// Parts 1–5 are built and counted once per dialog (and again when its modes change); parts
/// 6 and 7 change per message and are appended to the same system message. Within the token
/// budget the oldest history is dropped first; the other parts never are, and the newest
/// message is always kept. How much history was left out is reported, so the caller can
/// have it summarised.
#[derive(Debug, Clone)]
pub struct PromptBuilder {
    counter: TokenCounter,
    budget: TokenBudget,
    rules: std::sync::Arc<PromptRules>,
}

/// Section titles, in the order of the prompt.
pub const SAFETY_TITLE: &str = "Safety rules";
pub const MODE_TITLE: &str = "Mode";
pub const STORY_TITLE: &str = "Story";
pub const MEMORY_TITLE: &str = "What you remember about {{user}}";
pub const SUMMARY_TITLE: &str = "The story so far";
pub const FEATURES_TITLE: &str = "Enabled features";

impl PromptBuilder {
    pub fn new(
        counter: TokenCounter,
        budget: TokenBudget,
        rules: std::sync::Arc<PromptRules>,
    ) -> PromptBuilder {
        PromptBuilder {
            counter,
            budget,
            rules,
        }
    }

    pub fn counter(&self) -> TokenCounter {
        self.counter
    }

    /// The fixed part of every prompt of one dialog (parts 1–6 and the post-history
    /// instructions), with its token cost.
    pub fn fixed_prompt(&self, context: &PromptContext<'_>) -> FixedPrompt {
        let persona = context.persona;
        let mut system = if persona.system_prompt.trim().is_empty() {
            String::from(
                "You are {{char}}. Stay in character and write {{char}}'s next reply in a \
                 conversation with {{user}}. Never speak for {{user}}. Answer in the language \
                 {{user}} writes in.",
            )
        } else {
            persona.system_prompt.clone()
        };
        let story = format!(
            "{}\n{}",
            context.story.title.trim(),
            context.story.premise.trim()
        );
        let mode = if context.modes.intense_mode {
            &self.rules.mode_intense
        } else {
            &self.rules.mode_normal
        };
        let mut features = Vec::new();
        if context.modes.fantasy_scenes {
            features.push(self.rules.fantasy_scenes.trim());
        }
        let features = features.join("\n");
        let sections = [
            ("Description of {{char}}", persona.description.as_str()),
            ("{{char}}'s personality", &persona.personality),
            ("Scenario", &persona.scenario),
            ("Example dialogue", &persona.mes_example),
            (SAFETY_TITLE, &self.rules.rules),
            (MODE_TITLE, mode),
            (STORY_TITLE, &story),
            (FEATURES_TITLE, &features),
        ];
        for (title, body) in sections {
            if !body.trim().is_empty() {
                system.push_str("\n\n");
                system.push_str(title);
                system.push_str(":\n");
                system.push_str(body.trim());
            }
        }
        let system = persona.substitute(&system, context.user_name);
        let post = persona.substitute(persona.post_history_instructions.trim(), context.user_name);
        let mut tokens = self.counter.count(&system) as usize + TOKENS_PER_MESSAGE;
        if !post.is_empty() {
            tokens += self.counter.count(&post) as usize + TOKENS_PER_MESSAGE;
        }
        FixedPrompt {
            system,
            post,
            tokens,
            user_name: context.user_name.to_owned(),
        }
    }

    /// Builds the request messages for a dialog's fixed prompt and history (oldest first).
    pub fn build(&self, fixed: &FixedPrompt, history: &[HistoryEntry]) -> BuiltPrompt {
        self.build_with_directive(fixed, history, None)
    }

    /// Like [`PromptBuilder::build`], with a one-off instruction after everything else
    /// (for "continue the story" or "greet the returning user").
    pub fn build_with_directive(
        &self,
        fixed: &FixedPrompt,
        history: &[HistoryEntry],
        directive: Option<&str>,
    ) -> BuiltPrompt {
        let turn = TurnContext {
            directive,
            ..TurnContext::default()
        };
        self.build_turn(fixed, &turn, history)
    }

    /// Builds one reply's request: the fixed prompt with this message's memory and the
    /// story's summary, then as much of `history` (after the summary) as fits.
    pub fn build_turn(
        &self,
        fixed: &FixedPrompt,
        turn: &TurnContext<'_>,
        history: &[HistoryEntry],
    ) -> BuiltPrompt {
        let directive = turn.directive;
        let mut system = fixed.system.clone();
        let mut extra_tokens = 0;
        if !turn.memory.trim().is_empty() {
            let section = format!(
                "\n\n{}:\n{}",
                MEMORY_TITLE.replace("{{user}}", &fixed.user_name),
                turn.memory.trim()
            );
            extra_tokens += self.counter.count(&section) as usize;
            system.push_str(&section);
        }
        if let Some((summary, tokens)) = turn.summary {
            system.push_str("\n\n");
            system.push_str(SUMMARY_TITLE);
            system.push_str(":\n");
            system.push_str(summary.trim());
            extra_tokens += tokens as usize + self.counter.count(SUMMARY_TITLE) as usize + 2;
        }
        let directive_tokens = directive.map_or(0, |text| {
            self.counter.count(text) as usize + TOKENS_PER_MESSAGE
        });
        let available = self
            .budget
            .prompt_tokens()
            .saturating_sub(fixed.tokens + extra_tokens + directive_tokens);
        let mut kept = 0;
        let mut spent = 0;
        for entry in history.iter().rev() {
            let cost = entry.token_count as usize + TOKENS_PER_MESSAGE;
            if kept > 0 && spent + cost > available {
                break;
            }
            spent += cost;
            kept += 1;
        }

        let mut messages = Vec::with_capacity(kept + 3);
        messages.push(ChatMessage {
            role: Role::System,
            content: system,
        });
        messages.extend(
            history[history.len() - kept..]
                .iter()
                .map(|entry| ChatMessage {
                    role: entry.role,
                    content: entry.content.clone(),
                }),
        );
        if !fixed.post.is_empty() {
            messages.push(ChatMessage {
                role: Role::System,
                content: fixed.post.clone(),
            });
        }
        if let Some(directive) = directive {
            messages.push(ChatMessage {
                role: Role::System,
                content: directive.to_owned(),
            });
        }
        BuiltPrompt {
            messages,
            estimated_tokens: u32::try_from(fixed.tokens + extra_tokens + directive_tokens + spent)
                .unwrap_or(u32::MAX),
            left_out: history.len() - kept,
        }
    }
}

/// A prompt ready to send, with its token count (from counts made when the parts were stored).
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltPrompt {
    pub messages: Vec<ChatMessage>,
    pub estimated_tokens: u32,
    /// The oldest history entries that did not fit (the caller may have them summarised).
    pub left_out: usize,
}

/// A dialog's fixed part of every prompt, with its token cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedPrompt {
    /// The system message's fixed part: persona, safety, mode, story, features
    /// (placeholders replaced).
    pub system: String,
    /// Post-history instructions, sent after the history; may be empty.
    pub post: String,
    /// Tokens of both, including per-message overhead.
    pub tokens: usize,
    /// The user's name, for the memory section's title.
    pub user_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn persona() -> Persona {
        Persona::parse(
            Path::new("mira.toml"),
            r#"
name = "Mira"
description = "{{char}} keeps the lighthouse."
personality = "calm"
scenario = "{{user}} knocks at night."
first_mes = "Who's there?"
post_history_instructions = "Reply as {{char}} in two sentences."

[[stories]]
id = "storm"
title = "The storm night"
premise = "A boat breaks on the rocks and {{user}} swims ashore."
opening_message = "*The door opens.*"
"#,
        )
        .expect("valid persona")
    }

    fn rules() -> std::sync::Arc<PromptRules> {
        std::sync::Arc::new(PromptRules {
            rules: "RULES: nothing harmful.".into(),
            mode_normal: "MODE: gentle.".into(),
            mode_intense: "MODE: intense drama.".into(),
            fantasy_scenes: "FEATURE: fantasy scenes.".into(),
        })
    }

    fn builder(context_tokens: usize, reply_tokens: usize) -> PromptBuilder {
        PromptBuilder::new(
            TokenCounter::new(),
            TokenBudget {
                context_tokens,
                reply_tokens,
            },
            rules(),
        )
    }

    fn entry(counter: TokenCounter, role: Role, text: &str) -> HistoryEntry {
        HistoryEntry {
            message_id: 0,
            telegram_message_id: None,
            earlier_parts: Vec::new(),
            role,
            content: text.to_owned(),
            token_count: counter.count(text),
        }
    }

    fn fixed(builder: &PromptBuilder, persona: &Persona, modes: DialogModes) -> FixedPrompt {
        builder.fixed_prompt(&PromptContext {
            persona,
            story: &persona.stories[0],
            user_name: "Ann",
            modes,
        })
    }

    #[test]
    fn every_part_is_in_place_and_in_order() {
        let builder = builder(4000, 500);
        let counter = builder.counter();
        let persona = persona();
        let modes = DialogModes {
            intense_mode: true,
            fantasy_scenes: true,
        };
        let fixed_prompt = fixed(&builder, &persona, modes);
        let history = vec![
            entry(counter, Role::Assistant, "Who's there?"),
            entry(counter, Role::User, "A traveller."),
        ];
        let turn = TurnContext {
            memory: "- Ann likes tea.",
            summary: Some(("Ann was shipwrecked.", 5)),
            directive: Some("Go on with the story."),
        };
        let messages = builder.build_turn(&fixed_prompt, &turn, &history).messages;
        assert_eq!(messages.len(), 5);
        let system = &messages[0].content;
        assert_eq!(messages[0].role, Role::System);
        let position = |needle: &str| {
            system
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from {system}"))
        };
        let order = [
            position("Mira keeps the lighthouse."),
            position("RULES: nothing harmful."),
            position("MODE: intense drama."),
            position("The storm night\nA boat breaks on the rocks and Ann swims ashore."),
            position("FEATURE: fantasy scenes."),
            position("What you remember about Ann:\n- Ann likes tea."),
            position("The story so far:\nAnn was shipwrecked."),
        ];
        assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{order:?}");
        assert!(!system.contains("MODE: gentle."));
        assert_eq!(messages[1].content, "Who's there?");
        assert_eq!(messages[2].content, "A traveller.");
        assert_eq!(messages[3].content, "Reply as Mira in two sentences.");
        assert_eq!(messages[4].content, "Go on with the story.");

        // Modes off: the normal mode, no features section; no memory, no memory section.
        let plain = fixed(&builder, &persona, DialogModes::default());
        assert!(plain.system.contains("MODE: gentle."));
        assert!(!plain.system.contains(FEATURES_TITLE));
        let plain_messages = builder.build(&plain, &history).messages;
        assert!(!plain_messages[0].content.contains("What you remember"));
        assert!(!plain_messages[0].content.contains(SUMMARY_TITLE));
    }

    #[test]
    fn oldest_history_is_trimmed_first_and_newest_always_kept() {
        let unlimited = builder(100_000, 0);
        let counter = unlimited.counter();
        let persona = persona();
        let history: Vec<HistoryEntry> = (0..50)
            .map(|index| {
                entry(
                    counter,
                    Role::User,
                    &format!("message number {index} with some words"),
                )
            })
            .collect();
        let fixed_prompt = fixed(&unlimited, &persona, DialogModes::default());
        let fixed_cost: usize = unlimited
            .build(&fixed_prompt, &[])
            .messages
            .iter()
            .map(|message| counter.count(&message.content) as usize + TOKENS_PER_MESSAGE)
            .sum();
        assert_eq!(
            fixed_cost, fixed_prompt.tokens,
            "the cached cost is the real cost"
        );
        let per_message = history[10].token_count as usize + TOKENS_PER_MESSAGE;
        let builder = builder(fixed_cost + per_message * 5 + 100, 100);
        let built = builder.build(&fixed_prompt, &history);
        assert_eq!(
            built.estimated_tokens as usize,
            fixed_prompt.tokens + per_message * 5
        );
        assert_eq!(
            built.left_out, 45,
            "what did not fit is reported for a summary"
        );
        let messages = built.messages;
        let kept: Vec<&str> = messages[1..messages.len() - 1]
            .iter()
            .map(|message| message.content.as_str())
            .collect();
        assert_eq!(kept.len(), 5);
        assert_eq!(kept[0], "message number 45 with some words");
        assert_eq!(kept[4], "message number 49 with some words");
        assert!(
            messages[0].content.contains("The storm night"),
            "story kept"
        );

        let tiny = super::PromptBuilder::new(
            counter,
            TokenBudget {
                context_tokens: 10,
                reply_tokens: 5,
            },
            rules(),
        );
        let messages = tiny.build(&fixed_prompt, &history).messages;
        assert!(messages[0].content.contains("lighthouse"), "persona kept");
        assert!(
            messages[0].content.contains("The storm night"),
            "story kept"
        );
        assert_eq!(messages.len(), 3, "newest message kept even over budget");
        assert_eq!(messages[1].content, "message number 49 with some words");
    }
}
