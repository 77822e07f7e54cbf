//! Long-term memory, the pure part: facts as the model states them, their normal form and
//! hash, vectors as compact bytes, the hybrid score recall ranks by, and the prompts that ask
//! for facts and for summaries.
//!
//! Why no vector database: recall searches one user's memories only — hundreds, rarely a few
//! thousand — so an exact scan of their vectors (kept in the session while it lives) costs
//! well under a millisecond and is always right, where an approximate index would add a
//! service, a consistency problem (forgetting must reach it) and recall errors. Past tens of
//! thousands of memories per user, or a search across users, an ANN index (pgvector's HNSW,
//! or Qdrant as the Vitte bot had) would be worth it; the store port would then rank in the
//! database instead of returning every vector.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::ports::Role;

/// What a fact is about; decides its scope (see [`MemorySettings::user_wide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Who the user is: name, age, where they live, what they do.
    Identity,
    /// What they like and dislike.
    Preference,
    /// People and animals in their life.
    Relationship,
    /// Something that happened or will happen to them.
    Event,
    Other,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Identity,
        Category::Preference,
        Category::Relationship,
        Category::Event,
        Category::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Identity => "identity",
            Category::Preference => "preference",
            Category::Relationship => "relationship",
            Category::Event => "event",
            Category::Other => "other",
        }
    }

    pub fn parse(value: &str) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|category| category.as_str() == value)
    }
}

/// How memory behaves; from the `[memory]` configuration section.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySettings {
    pub enabled: bool,
    /// New messages in a slot after which facts are extracted (more than this many).
    pub extract_after_messages: usize,
    /// Categories remembered for the whole user (every persona recalls them); the others
    /// belong to the persona they were told to.
    pub user_wide: Vec<Category>,
    /// A new fact at least this similar to a stored one refreshes it instead of adding.
    pub near_duplicate: f32,
    /// Memories recalled per message.
    pub top_k: usize,
    /// Least hybrid score of a recalled memory.
    pub threshold: f32,
    /// The share of keyword overlap in the hybrid score (the rest is cosine similarity).
    pub keyword_weight: f32,
    /// Tokens the memory part of a prompt may take.
    pub prompt_tokens: usize,
    /// Longest wait for the embedding of a user's message; past it the reply goes without
    /// memories.
    pub recall_deadline: std::time::Duration,
    /// Messages summarised at once beyond those that no longer fit (fewer summaries).
    pub summary_chunk: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            enabled: true,
            extract_after_messages: 5,
            user_wide: vec![Category::Identity, Category::Relationship],
            near_duplicate: 0.95,
            top_k: 5,
            threshold: 0.3,
            keyword_weight: 0.3,
            prompt_tokens: 400,
            recall_deadline: std::time::Duration::from_millis(300),
            summary_chunk: 10,
        }
    }
}

impl MemorySettings {
    /// The persona a fact of `category` told to `persona_id` belongs to: `None` for the
    /// whole user.
    pub fn scope_of(&self, category: Category, persona_id: &str) -> Option<String> {
        (!self.user_wide.contains(&category)).then(|| persona_id.to_owned())
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.near_duplicate) {
            return Err("near_duplicate must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err("threshold must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.keyword_weight) {
            return Err("keyword_weight must be between 0 and 1".into());
        }
        if self.top_k == 0 {
            return Err("top_k must be at least 1".into());
        }
        if self.extract_after_messages == 0 {
            return Err("extract_after_messages must be at least 1".into());
        }
        Ok(())
    }
}

/// A durable fact about the user, as the model states it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub text: String,
    pub category: Category,
    /// 1 (trivia) to 5 (central to who they are).
    pub importance: u8,
    /// The number (1-based) of a stored fact, as listed in the request, that this one
    /// contradicts and replaces.
    pub replaces: Option<usize>,
}

/// Why the model's answer is not a list of facts. The whole answer is refused: nothing is
/// stored half-parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FactsError {
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    #[error("fact {index}: {problem}")]
    BadFact { index: usize, problem: String },
}

/// Longest fact kept, in characters.
pub const MAX_FACT_CHARS: usize = 300;
/// Most facts taken from one answer (the most important ones when there are more).
pub const MAX_FACTS: usize = 20;

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum FactsAnswer {
    Wrapped { facts: Vec<serde_json::Value> },
    Bare(Vec<serde_json::Value>),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFact {
    text: String,
    category: String,
    importance: serde_json::Value,
    #[serde(default)]
    replaces: Option<usize>,
}

/// Reads the model's facts: `{"facts": [{"text", "category", "importance", "replaces"?}]}`
/// (or the bare array, or either in a Markdown code fence). `related` is how many stored
/// facts the request listed (what `replaces` may name).
pub fn parse_facts(answer: &str, related: usize) -> Result<Vec<Fact>, FactsError> {
    let body = strip_fence(answer.trim());
    let parsed: FactsAnswer =
        serde_json::from_str(body).map_err(|error| FactsError::NotJson(error.to_string()))?;
    let items = match parsed {
        FactsAnswer::Wrapped { facts } | FactsAnswer::Bare(facts) => facts,
    };
    let mut facts = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let bad = |problem: String| FactsError::BadFact {
                index: index + 1,
                problem,
            };
            let raw: RawFact = serde_json::from_value(item).map_err(|e| bad(e.to_string()))?;
            let text = raw.text.split_whitespace().collect::<Vec<_>>().join(" ");
            if text.is_empty() {
                return Err(bad("empty text".into()));
            }
            if text.chars().count() > MAX_FACT_CHARS {
                return Err(bad(format!("text over {MAX_FACT_CHARS} characters")));
            }
            let category = Category::parse(&raw.category.to_lowercase())
                .ok_or_else(|| bad(format!("unknown category {:?}", raw.category)))?;
            let importance = raw
                .importance
                .as_u64()
                .filter(|value| (1..=5).contains(value))
                .ok_or_else(|| bad(format!("importance {} is not 1 to 5", raw.importance)))?;
            if let Some(number) = raw.replaces {
                if number == 0 || number > related {
                    return Err(bad(format!("replaces {number}: no such stored fact")));
                }
            }
            Ok(Fact {
                text,
                category,
                importance: importance as u8,
                replaces: raw.replaces,
            })
        })
        .collect::<Result<Vec<Fact>, FactsError>>()?;
    // More than asked for: the most important ones (in their order otherwise).
    if facts.len() > MAX_FACTS {
        let mut by_importance: Vec<usize> = (0..facts.len()).collect();
        by_importance.sort_by_key(|&index| std::cmp::Reverse(facts[index].importance));
        let mut kept = by_importance[..MAX_FACTS].to_vec();
        kept.sort_unstable();
        facts = kept.into_iter().map(|index| facts[index].clone()).collect();
    }
    Ok(facts)
}

fn strip_fence(text: &str) -> &str {
    let Some(inner) = text.strip_prefix("```") else {
        return text;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// A fact's normal form: lowercase, letters and digits only, single spaces.
pub fn normalise(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The hash of a fact's normal form (hex SHA-256): equal for exact duplicates.
pub fn content_hash(text: &str) -> String {
    Sha256::digest(normalise(text).as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Words too common to say two texts are about the same thing.
const STOPWORDS: &[&str] = &[
    "the",
    "and",
    "are",
    "was",
    "were",
    "you",
    "your",
    "his",
    "her",
    "she",
    "him",
    "they",
    "them",
    "their",
    "what",
    "who",
    "how",
    "why",
    "when",
    "where",
    "this",
    "that",
    "with",
    "for",
    "from",
    "have",
    "has",
    "had",
    "not",
    "but",
    "all",
    "can",
    "will",
    "would",
    "about",
    "is",
    "does",
    "did",
    "like",
    "just",
    "very",
    "user",
    "что",
    "это",
    "как",
    "так",
    "все",
    "ещё",
    "еще",
    "там",
    "тут",
    "когда",
    "где",
    "кто",
    "мой",
    "моя",
    "мое",
    "мои",
    "твой",
    "меня",
    "тебя",
    "она",
    "они",
    "его",
    "ему",
    "был",
    "была",
    "было",
    "есть",
    "для",
    "или",
];

/// The words of `text` that can tell two texts apart: numbers, and words of three or more
/// letters that are not stopwords (lowercase).
pub fn keywords(text: &str) -> HashSet<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| {
            word.chars().all(|c| c.is_ascii_digit()) && !word.is_empty()
                || word.chars().count() >= 3 && !STOPWORDS.contains(word)
        })
        .map(str::to_owned)
        .collect()
}

/// The share of the smaller set's keywords that the other set has too (0 to 1).
pub fn keyword_overlap(query: &HashSet<String>, memory: &HashSet<String>) -> f32 {
    let smaller = query.len().min(memory.len());
    if smaller == 0 {
        return 0.0;
    }
    let shared = query.intersection(memory).count();
    shared as f32 / smaller as f32
}

/// `vector` scaled to length 1 (a zero vector stays zero); then cosine similarity is a dot
/// product.
pub fn unit(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}

/// Cosine similarity of two unit vectors; 0 when their lengths differ (another model).
///
/// Summed in eight independent lanes, which the compiler turns into SIMD (a single running
/// sum cannot be reordered, so it would stay scalar): recall scans hundreds of vectors per
/// message.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let mut lanes = [0.0_f32; 8];
    let (whole_a, whole_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = whole_a
        .remainder()
        .iter()
        .zip(whole_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in whole_a.zip(whole_b) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The hybrid score recall ranks by.
pub fn hybrid_score(cosine: f32, overlap: f32, keyword_weight: f32) -> f32 {
    (1.0 - keyword_weight) * cosine + keyword_weight * overlap
}

/// A vector as compact bytes (little-endian `f32`s): 6 KiB for 1536 dimensions.
pub fn vector_to_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector of [`vector_to_bytes`]; trailing bytes that do not make a whole `f32` are
/// ignored.
pub fn vector_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

/// Marks a request as a memory extraction (the system message starts with it).
pub const EXTRACTION_MARKER: &str = "You maintain the long-term memory of a companion.";
/// Marks a request as a story summary.
pub const SUMMARY_MARKER: &str = "You keep the running summary of a long story.";

/// The system message asking for durable facts about the user in `messages`, given the
/// `related` facts already stored (numbered from 1, so an answer can name one it replaces).
pub fn extraction_prompt(user_name: &str, related: &[&str]) -> String {
    let mut prompt = format!(
        "{EXTRACTION_MARKER} Read the new messages between {user_name} and a persona and list \
         durable facts about {user_name} (not about the persona, not about the story's \
         fiction): name, age, home, work, family, pets, tastes, plans, important events. \
         Skip small talk and anything already stored unless it changed; at most {MAX_FACTS} \
         facts.\n\
         Answer with JSON only: {{\"facts\": [{{\"text\": \"a short sentence in the \
         language of the conversation\", \"category\": \"identity|preference|relationship|\
         event|other\", \"importance\": 1-5, \"replaces\": N}}]}}. Give \"replaces\" only \
         when a new fact contradicts stored fact N (the stored one is kept as history). \
         Answer {{\"facts\": []}} when there is nothing durable."
    );
    if !related.is_empty() {
        prompt.push_str("\n\nFacts already stored:");
        for (number, fact) in related.iter().enumerate() {
            prompt.push_str(&format!("\n{}. {fact}", number + 1));
        }
    }
    prompt
}

/// What the model is told after an answer that was not valid facts JSON.
pub fn extraction_correction(error: &FactsError) -> String {
    format!(
        "Your previous answer could not be used ({error}). Answer again with the JSON object \
         only, exactly in the format asked."
    )
}

/// The transcript of `messages` for a memory or summary request.
pub fn transcript(messages: &[(Role, String)], user_name: &str, persona_name: &str) -> String {
    messages
        .iter()
        .map(|(role, text)| {
            let who = match role {
                Role::User => user_name,
                _ => persona_name,
            };
            format!("{who}: {text}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The system message asking for an updated summary of a story's earlier part.
pub fn summary_prompt(previous: Option<&str>) -> String {
    let mut prompt = format!(
        "{SUMMARY_MARKER} Write a summary of the story so far in at most 200 words, in the \
         language of the story: who is who, what happened, what was promised or left open, \
         and how the relationship stands. Keep names and numbers exact. Answer with the \
         summary only."
    );
    if let Some(previous) = previous {
        prompt.push_str("\n\nThe summary so far:\n");
        prompt.push_str(previous);
    }
    prompt
}

/// The memory part of a prompt: one line per memory, best first, as many as fit `budget`
/// tokens (counted by `count`).
pub fn memory_section(memories: &[&str], budget: usize, count: impl Fn(&str) -> u32) -> String {
    let mut section = String::new();
    let mut spent = 0;
    for memory in memories {
        let line = format!("- {memory}\n");
        let cost = count(&line) as usize;
        if spent + cost > budget {
            break;
        }
        spent += cost;
        section.push_str(&line);
    }
    section.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_from_the_formats_models_answer_with() {
        let wrapped = r#"{"facts": [{"text": "Ann has a dog called Rex", "category": "relationship", "importance": 4}]}"#;
        let facts = parse_facts(wrapped, 0).expect("valid");
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].category, Category::Relationship);
        assert_eq!(facts[0].importance, 4);
        let fenced = "```json\n[{\"text\": \"Ann lives in Paris\", \"category\": \"identity\", \"importance\": 5, \"replaces\": 1}]\n```";
        let facts = parse_facts(fenced, 1).expect("valid");
        assert_eq!(facts[0].replaces, Some(1));
        assert_eq!(parse_facts(r#"{"facts": []}"#, 0), Ok(Vec::new()));
        // Too many: the most important are kept, in order.
        let many: Vec<String> = (0..25)
            .map(|i| {
                let importance = if i % 5 == 0 { 5 } else { 1 + i % 3 };
                format!(
                    r#"{{"text": "fact {i}", "category": "other", "importance": {importance}}}"#
                )
            })
            .collect();
        let facts = parse_facts(&format!("[{}]", many.join(",")), 0).expect("kept");
        assert_eq!(facts.len(), MAX_FACTS);
        assert_eq!(facts[0].text, "fact 0");
        assert!(facts.iter().filter(|fact| fact.importance == 5).count() == 5);
    }

    #[test]
    fn one_bad_fact_refuses_the_whole_answer() {
        let cases = [
            ("not json at all", "not JSON"),
            (
                r#"{"facts": [{"text": "ok", "category": "identity", "importance": 3}, {"text": "", "category": "identity", "importance": 3}]}"#,
                "fact 2",
            ),
            (
                r#"[{"text": "x", "category": "mood", "importance": 3}]"#,
                "unknown category",
            ),
            (
                r#"[{"text": "x", "category": "other", "importance": 9}]"#,
                "importance",
            ),
            (
                r#"[{"text": "x", "category": "other", "importance": 2, "replaces": 3}]"#,
                "no such stored fact",
            ),
            (r#"[{"text": "x", "category": "other"}]"#, "importance"),
        ];
        for (answer, expected) in cases {
            let error = parse_facts(answer, 1).expect_err(answer).to_string();
            assert!(error.contains(expected), "{answer}: {error}");
        }
    }

    #[test]
    fn exact_duplicates_share_a_hash_whatever_the_case_and_punctuation() {
        assert_eq!(
            content_hash("Ann's dog is called Rex."),
            content_hash("  ann s DOG is called rex")
        );
        assert_ne!(
            content_hash("Ann lives in Paris"),
            content_hash("Ann lives in Berlin")
        );
    }

    #[test]
    fn vectors_round_trip_through_bytes() {
        let vector = unit(vec![3.0, 4.0, 0.0]);
        assert_eq!(vector, vec![0.6, 0.8, 0.0]);
        let bytes = vector_to_bytes(&vector);
        assert_eq!(bytes.len(), 12);
        assert_eq!(vector_from_bytes(&bytes), vector);
        assert!((cosine(&vector, &vector) - 1.0).abs() < 1e-6);
        assert_eq!(
            cosine(&vector, &[1.0]),
            0.0,
            "another model's vector never matches"
        );
    }

    #[test]
    fn names_and_numbers_count_as_keywords() {
        let query = keywords("Is Rex ok? He turned 7");
        assert!(query.contains("rex") && query.contains("7") && query.contains("turned"));
        assert!(!query.contains("is") && !query.contains("he"));
        let memory = keywords("Ann's dog Rex is 7 years old");
        assert!(keyword_overlap(&query, &memory) > 0.5);
        assert_eq!(keyword_overlap(&query, &HashSet::new()), 0.0);
    }

    #[test]
    fn the_memory_section_stops_at_its_budget() {
        let memories = ["one fact", "two facts", "three facts"];
        let words = |text: &str| text.split_whitespace().count() as u32;
        assert_eq!(
            memory_section(&memories, 6, words),
            "- one fact\n- two facts"
        );
        assert_eq!(memory_section(&memories, 2, words), "");
    }

    #[test]
    fn the_scope_follows_the_category() {
        let settings = MemorySettings::default();
        assert_eq!(settings.scope_of(Category::Identity, "mira"), None);
        assert_eq!(
            settings.scope_of(Category::Preference, "mira").as_deref(),
            Some("mira")
        );
    }
}
