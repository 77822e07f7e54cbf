//! What the bot says in its own voice, in Russian and English, and splitting of long replies.

/// Telegram's limit for one message, in UTF-16 code units.
pub const TELEGRAM_MESSAGE_LIMIT: usize = 4096;

/// The bot's own phrases in one language.
#[derive(Debug)]
pub struct Texts {
    pub choose_persona: &'static str,
    pub choose_persona_first: &'static str,
    pub help: &'static str,
    pub unknown_persona: &'static str,
    pub llm_failed: &'static str,
    pub storage_failed: &'static str,
    pub internal_error: &'static str,
    pub queue_full: &'static str,
    pub text_only: &'static str,
    pub llm_unavailable: &'static str,
    pub rate_limited: &'static str,
    pub retry_button: &'static str,
    pub nothing_to_retry: &'static str,
    pub dropped_for_newer: &'static str,
}

const ENGLISH: Texts = Texts {
    choose_persona: "Who would you like to talk to? Pick a character:",
    choose_persona_first: "First pick a character to talk to:",
    help: "I am a bot you can chat with as different characters.\n\n\
           /start — choose a character\n\
           /help — this list of commands\n\n\
           After choosing, just write: the character answers.",
    unknown_persona: "That character is no longer available. Please pick another one:",
    llm_failed: "Sorry, I could not come up with an answer right now. Your message is saved — \
                 please try again in a minute.",
    storage_failed: "Sorry, I could not save your message. Please send it again in a moment.",
    internal_error: "Sorry, something went wrong on my side. Please send your last message again.",
    queue_full: "I am still answering your earlier messages. Please wait for the reply and send \
                 this one again.",
    text_only: "I can only read text messages for now.",
    llm_unavailable: "The AI is unavailable right now. Your message is saved — press Retry in a \
                      minute.",
    rate_limited: "Too many messages at once. Your message is saved — press Retry in a moment.",
    retry_button: "🔄 Retry",
    nothing_to_retry: "There is nothing to retry: your last message was answered.",
    dropped_for_newer: "Too many messages at once: I skipped an older one. Please send it again \
                        if it still matters.",
};

const RUSSIAN: Texts = Texts {
    choose_persona: "С кем хотите поговорить? Выберите персонажа:",
    choose_persona_first: "Сначала выберите персонажа для разговора:",
    help: "Я бот, с которым можно общаться от лица разных персонажей.\n\n\
           /start — выбрать персонажа\n\
           /help — список команд\n\n\
           После выбора просто пишите: персонаж ответит.",
    unknown_persona: "Этот персонаж больше недоступен. Выберите другого:",
    llm_failed: "Извините, сейчас не получилось ответить. Ваше сообщение сохранено — \
                 попробуйте ещё раз через минуту.",
    storage_failed: "Извините, не удалось сохранить сообщение. Отправьте его ещё раз чуть позже.",
    internal_error: "Извините, у меня что-то сломалось. Пожалуйста, отправьте последнее \
                     сообщение ещё раз.",
    queue_full: "Я ещё отвечаю на предыдущие сообщения. Дождитесь ответа и отправьте это \
                 сообщение ещё раз.",
    text_only: "Пока я понимаю только текстовые сообщения.",
    llm_unavailable: "ИИ сейчас недоступен. Ваше сообщение сохранено — нажмите «Повторить» через \
                      минуту.",
    rate_limited: "Слишком много сообщений сразу. Ваше сообщение сохранено — нажмите «Повторить» \
                   чуть позже.",
    retry_button: "🔄 Повторить",
    nothing_to_retry: "Повторять нечего: на последнее сообщение уже есть ответ.",
    dropped_for_newer: "Слишком много сообщений сразу: одно из ранних я пропустил. Отправьте его \
                        ещё раз, если оно важно.",
};

impl Texts {
    /// Russian for users whose Telegram speaks a language of the former USSR region, else
    /// English.
    pub fn for_language(language_code: Option<&str>) -> &'static Texts {
        let primary = language_code
            .and_then(|code| code.split(['-', '_']).next())
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "ru" | "uk" | "be" | "kk" | "uz" | "ky" | "tg" => &RUSSIAN,
            _ => &ENGLISH,
        }
    }
}

/// Splits `text` into parts of at most `limit` UTF-16 code units, preferring to cut at a
/// paragraph break, then a line break, then a space; never inside a character.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while utf16_len(rest) > limit {
        let hard_end = byte_index_at_utf16(rest, limit);
        let window = &rest[..hard_end];
        let cut = ["\n\n", "\n", " "]
            .iter()
            .filter_map(|separator| window.rfind(separator))
            .find(|&index| index >= hard_end / 2)
            .unwrap_or(hard_end);
        let cut = if cut == 0 { hard_end } else { cut };
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// The byte index of the last whole character within `units` UTF-16 code units.
fn byte_index_at_utf16(text: &str, units: usize) -> usize {
    let mut used = 0;
    for (index, character) in text.char_indices() {
        used += character.len_utf16();
        if used > units {
            return index;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_message("hello", 4096), vec!["hello"]);
    }

    #[test]
    fn long_text_is_split_at_spaces_within_the_limit() {
        let text = "word ".repeat(2000);
        let parts = split_message(&text, 4096);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|part| utf16_len(part) <= 4096));
        assert!(parts.iter().all(|part| part.ends_with("word")));
        assert_eq!(parts.join(" "), text.trim());
    }

    #[test]
    fn text_without_spaces_is_cut_on_character_boundaries() {
        let text = "я".repeat(5000) + "😀".repeat(10).as_str();
        let parts = split_message(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|part| utf16_len(part) <= 4096));
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn language_is_chosen_from_the_telegram_code() {
        assert_eq!(
            Texts::for_language(Some("ru")).help,
            RUSSIAN.help,
            "Russian users get Russian"
        );
        assert_eq!(Texts::for_language(Some("en-US")).help, ENGLISH.help);
        assert_eq!(Texts::for_language(None).help, ENGLISH.help);
    }
}
