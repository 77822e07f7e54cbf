//! Prompt building: a persona and a dialog's history become an LLM request that fits the
//! model's context window.

use crate::persona::Persona;
use crate::ports::{ChatMessage, HistoryEntry, Role};

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

/// Builds prompts: persona first, then as much recent history as fits, then the persona's
/// post-history instructions. The oldest history is dropped first; the persona never is, and
/// the newest message is always kept.
#[derive(Debug, Clone)]
pub struct PromptBuilder {
    counter: TokenCounter,
    budget: TokenBudget,
}

impl PromptBuilder {
    pub fn new(counter: TokenCounter, budget: TokenBudget) -> PromptBuilder {
        PromptBuilder { counter, budget }
    }

    pub fn counter(&self) -> TokenCounter {
        self.counter
    }

    /// The persona's part of every prompt for one user: built and counted once per dialog,
    /// not once per message.
    pub fn persona_prompt(&self, persona: &Persona, user_name: &str) -> PersonaPrompt {
        let mut system = if persona.system_prompt.trim().is_empty() {
            String::from(
                "You are {{char}}. Stay in character and write {{char}}'s next reply in a \
                 conversation with {{user}}. Never speak for {{user}}. Answer in the language \
                 {{user}} writes in.",
            )
        } else {
            persona.system_prompt.clone()
        };
        let sections = [
            ("Description of {{char}}", &persona.description),
            ("{{char}}'s personality", &persona.personality),
            ("Scenario", &persona.scenario),
            ("Example dialogue", &persona.mes_example),
        ];
        for (title, body) in sections {
            if !body.trim().is_empty() {
                system.push_str("\n\n");
                system.push_str(title);
                system.push_str(":\n");
                system.push_str(body.trim());
            }
        }
        let system = persona.substitute(&system, user_name);
        let post = persona.substitute(persona.post_history_instructions.trim(), user_name);
        let mut tokens = self.counter.count(&system) as usize + TOKENS_PER_MESSAGE;
        if !post.is_empty() {
            tokens += self.counter.count(&post) as usize + TOKENS_PER_MESSAGE;
        }
        PersonaPrompt {
            system,
            post,
            tokens,
        }
    }

    /// Builds the request messages for a persona prompt and a history (oldest first).
    pub fn build(&self, persona: &PersonaPrompt, history: &[HistoryEntry]) -> BuiltPrompt {
        let available = self.budget.prompt_tokens().saturating_sub(persona.tokens);
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

        let mut messages = Vec::with_capacity(kept + 2);
        messages.push(ChatMessage {
            role: Role::System,
            content: persona.system.clone(),
        });
        messages.extend(
            history[history.len() - kept..]
                .iter()
                .map(|entry| ChatMessage {
                    role: entry.role,
                    content: entry.content.clone(),
                }),
        );
        if !persona.post.is_empty() {
            messages.push(ChatMessage {
                role: Role::System,
                content: persona.post.clone(),
            });
        }
        BuiltPrompt {
            messages,
            estimated_tokens: u32::try_from(persona.tokens + spent).unwrap_or(u32::MAX),
        }
    }
}

/// A prompt ready to send, with its token count (from counts made when the parts were stored).
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltPrompt {
    pub messages: Vec<ChatMessage>,
    pub estimated_tokens: u32,
}

/// The persona's fixed part of a prompt, with its token cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonaPrompt {
    /// The system message describing the persona (placeholders replaced).
    pub system: String,
    /// Post-history instructions, sent after the history; may be empty.
    pub post: String,
    /// Tokens of both, including per-message overhead.
    pub tokens: usize,
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
"#,
        )
        .expect("valid persona")
    }

    fn entry(counter: TokenCounter, role: Role, text: &str) -> HistoryEntry {
        HistoryEntry {
            role,
            content: text.to_owned(),
            token_count: counter.count(text),
        }
    }

    #[test]
    fn persona_comes_first_history_in_order_post_instructions_last() {
        let counter = TokenCounter::new();
        let builder = PromptBuilder::new(
            counter,
            TokenBudget {
                context_tokens: 4000,
                reply_tokens: 500,
            },
        );
        let history = vec![
            entry(counter, Role::Assistant, "Who's there?"),
            entry(counter, Role::User, "A traveller."),
        ];
        let messages = builder
            .build(&builder.persona_prompt(&persona(), "Ann"), &history)
            .messages;
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0].role, Role::System);
        assert!(messages[0].content.contains("Mira keeps the lighthouse."));
        assert!(messages[0].content.contains("Ann knocks at night."));
        assert_eq!(messages[1].content, "Who's there?");
        assert_eq!(messages[2].content, "A traveller.");
        assert_eq!(
            messages[3].content,
            "Reply as Mira in two sentences.".to_owned()
        );
    }

    #[test]
    fn oldest_history_is_trimmed_first_and_newest_always_kept() {
        let counter = TokenCounter::new();
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
        let unlimited = PromptBuilder::new(
            counter,
            TokenBudget {
                context_tokens: 100_000,
                reply_tokens: 0,
            },
        );
        let persona_prompt = unlimited.persona_prompt(&persona, "Ann");
        let fixed: usize = unlimited
            .build(&persona_prompt, &[])
            .messages
            .iter()
            .map(|message| counter.count(&message.content) as usize + TOKENS_PER_MESSAGE)
            .sum();
        assert_eq!(
            fixed, persona_prompt.tokens,
            "the cached cost is the real cost"
        );
        let per_message = history[10].token_count as usize + TOKENS_PER_MESSAGE;
        let builder = PromptBuilder::new(
            counter,
            TokenBudget {
                context_tokens: fixed + per_message * 5 + 100,
                reply_tokens: 100,
            },
        );
        let built = builder.build(&persona_prompt, &history);
        let expected_tokens = persona_prompt.tokens + per_message * 5;
        assert_eq!(built.estimated_tokens as usize, expected_tokens);
        let messages = built.messages;
        let kept: Vec<&str> = messages[1..messages.len() - 1]
            .iter()
            .map(|message| message.content.as_str())
            .collect();
        assert_eq!(kept.len(), 5);
        assert_eq!(kept[0], "message number 45 with some words");
        assert_eq!(kept[4], "message number 49 with some words");

        let tiny = PromptBuilder::new(
            counter,
            TokenBudget {
                context_tokens: 10,
                reply_tokens: 5,
            },
        );
        let messages = tiny.build(&persona_prompt, &history).messages;
        assert!(messages[0].content.contains("lighthouse"), "persona kept");
        assert_eq!(messages.len(), 3, "newest message kept even over budget");
        assert_eq!(messages[1].content, "message number 49 with some words");
    }
}
