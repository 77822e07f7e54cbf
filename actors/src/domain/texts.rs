//! What the bot says in its own voice, in Russian and English, and splitting of long replies.
//!
//! Every phrase exists in both languages (the compiler checks it: both are a [`Texts`]).

/// Telegram's limit for one message, in UTF-16 code units.
pub const TELEGRAM_MESSAGE_LIMIT: usize = 4096;

/// The languages the bot speaks in its own voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    /// Russian for users whose Telegram speaks a language of the former USSR region, else
    /// English.
    pub fn from_telegram(language_code: Option<&str>) -> Lang {
        let primary = language_code
            .and_then(|code| code.split(['-', '_']).next())
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "ru" | "uk" | "be" | "kk" | "uz" | "ky" | "tg" => Lang::Ru,
            _ => Lang::En,
        }
    }

    /// A language chosen with /language ("ru" or "en").
    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &ENGLISH,
            Lang::Ru => &RUSSIAN,
        }
    }
}

/// The bot's own phrases in one language. Phrases with `{…}` placeholders are filled with
/// [`fill`].
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
    /// The placeholder a streamed reply starts as.
    pub typing: &'static str,
    /// Added to a reply whose stream broke off.
    pub reply_cut_off: &'static str,
    /// Added to a reply stopped with /stop.
    pub reply_stopped: &'static str,
    /// A reply a restart cut short, too late to write now.
    pub reply_interrupted: &'static str,
    /// A finished reply a restart caught on its way as a new message: it may or may not
    /// have arrived (sending it again could show it twice). `{start}`: its first words.
    pub reply_maybe_delivered: &'static str,
    /// The button that shows such a reply.
    pub show_reply_button: &'static str,
    /// That button, when the reply is no longer in the dialog.
    pub reply_gone: &'static str,
    /// A message that waited too long to be answered now.
    pub reply_too_late: &'static str,
    /// A message over `session.max_message_chars`; `{limit}` is the limit.
    pub message_too_long: &'static str,
    pub nothing_to_stop: &'static str,
    pub regenerate_button: &'static str,
    pub continue_story_button: &'static str,
    pub only_last_reply: &'static str,
    pub nothing_to_regenerate: &'static str,
    /// `{name}`: the persona; `{adult}`: the 18+ mark or nothing; `{description}`.
    pub persona_card: &'static str,
    pub choose_story: &'static str,
    pub back_button: &'static str,
    pub unknown_story: &'static str,
    pub adult_question: &'static str,
    pub adult_confirm_button: &'static str,
    pub adult_mark: &'static str,
    /// `{slot}`, `{persona}`, `{story}`.
    pub dialog_started: &'static str,
    pub slots_full: &'static str,
    /// `{slot}`, `{persona}`: a button.
    pub replace_slot_button: &'static str,
    pub cancel_button: &'static str,
    pub cancelled: &'static str,
    pub dialogs_title: &'static str,
    /// `{slot}`, `{persona}`, `{story}`, `{ago}`, `{active}`.
    pub dialog_line: &'static str,
    /// `{slot}`.
    pub empty_slot_line: &'static str,
    pub active_mark: &'static str,
    /// `{slot}`.
    pub continue_button: &'static str,
    /// `{slot}`.
    pub clear_button: &'static str,
    pub new_dialog_button: &'static str,
    pub no_dialogs: &'static str,
    /// `{slot}`, `{persona}`.
    pub clear_question: &'static str,
    pub clear_confirm_button: &'static str,
    pub reset_question: &'static str,
    pub reset_confirm_button: &'static str,
    pub reset_done: &'static str,
    /// `{slot}`, `{persona}`, `{story}`.
    pub switched_to: &'static str,
    pub slot_empty: &'static str,
    pub menu_title: &'static str,
    pub menu_dialogs_button: &'static str,
    pub menu_settings_button: &'static str,
    pub menu_language_button: &'static str,
    /// `{slot}`, `{persona}`.
    pub settings_title: &'static str,
    pub intense_mode_label: &'static str,
    pub fantasy_scenes_label: &'static str,
    pub on: &'static str,
    pub off: &'static str,
    pub settings_need_dialog: &'static str,
    pub language_question: &'static str,
    pub language_set: &'static str,
    /// `{minutes}` / `{hours}` / `{days}` ago.
    pub minutes_ago: &'static str,
    pub hours_ago: &'static str,
    pub days_ago: &'static str,
    pub just_now: &'static str,
    /// A reply the output check withheld.
    pub reply_withheld: &'static str,
    /// `{name}`, `{last}`: the welcome back when the LLM cannot write one.
    pub welcome_back: &'static str,
    /// The bot's command menu in Telegram: (command, description).
    pub commands: [(&'static str, &'static str); 14],
    /// The store, plans, limits and payments.
    pub shop: &'static ShopTexts,
    /// What the personas remember: /memory and /forget_me.
    pub memory: &'static MemoryTexts,
    /// Proactive messages and their settings.
    pub notifications: &'static NotificationTexts,
}

use super::memory_texts as memory;
pub use super::memory_texts::MemoryTexts;
use super::notification_texts as notifications;
pub use super::notification_texts::NotificationTexts;
use super::shop_texts as shop;
pub use super::shop_texts::ShopTexts;

/// Replaces `{key}` placeholders of a phrase.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

const ENGLISH: Texts = Texts {
    choose_persona: "Who would you like to talk to? Pick a character:",
    choose_persona_first: "First pick a character to talk to:",
    help: "I am a bot you can chat with as different characters, each playing a story. You \
           can keep three dialogs at once.\n\n\
           /start — choose a character and a story\n\
           /dialogs — your three dialogs\n\
           /settings — dialog modes and notifications\n\
           /stop — stop the reply being written\n\
           /language — language of the bot\n\
           /reset — clear all dialogs\n\
           /store — plans and unlocks\n\
           /status — your plan and today's messages\n\
           /memory — what the character remembers about you\n\
           /forget_me — delete everything about you\n\
           /report — a recap of your week\n\
           /timezone — your time zone for notifications\n\
           /menu — the main menu\n\
           /help — this list of commands",
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
    typing: "… typing",
    reply_cut_off: "(the reply was cut off — press Regenerate or write on)",
    reply_stopped: "(stopped)",
    reply_interrupted: "Sorry, my reply to this was interrupted by a restart. Press Retry and \
                        I will write it again.",
    reply_maybe_delivered: "A restart caught my last reply («{start}») on its way. If it did \
                            not reach you, press the button to see it.",
    show_reply_button: "📜 Show the reply",
    reply_gone: "That reply is no longer in this dialog.",
    reply_too_late: "Sorry, I could not answer this in time. Press Retry and I will try again.",
    message_too_long: "That message is too long for me: please keep it under {limit} \
                       characters. Nothing was sent to the character.",
    nothing_to_stop: "Nothing is being written right now.",
    regenerate_button: "🔄 Regenerate",
    continue_story_button: "▶️ Continue",
    only_last_reply: "Only the latest reply can be regenerated.",
    nothing_to_regenerate: "There is no reply to regenerate yet.",
    persona_card: "*{name}*{adult}\n\n{description}",
    choose_story: "Choose a story:",
    back_button: "« Back",
    unknown_story: "That story is no longer available. Please pick another one:",
    adult_question: "This character is for adults only. Please confirm that you are 18 or \
                     older.",
    adult_confirm_button: "I am 18 or older",
    adult_mark: " (18+)",
    dialog_started: "Dialog {slot}: {persona} — {story}",
    slots_full: "All three dialogs are in use. Which one should the new story replace? Its \
                 history will be closed.",
    replace_slot_button: "Replace {slot}: {persona}",
    cancel_button: "Cancel",
    cancelled: "Cancelled.",
    dialogs_title: "Your dialogs:",
    dialog_line: "{slot}. {persona} — {story} ({ago}){active}",
    empty_slot_line: "{slot}. (empty)",
    active_mark: " ← current",
    continue_button: "▶️ Continue {slot}",
    clear_button: "🧹 Clear {slot}",
    new_dialog_button: "➕ New dialog",
    no_dialogs: "You have no dialogs yet.",
    clear_question: "Clear dialog {slot} with {persona}? Its history will be gone for the \
                     character; the story starts again.",
    clear_confirm_button: "Yes, clear it",
    reset_question: "Clear all three dialogs? Every history will be gone for the characters.",
    reset_confirm_button: "Yes, clear all",
    reset_done: "All dialogs are cleared. /start to begin a new one.",
    switched_to: "Dialog {slot}: {persona} — {story}",
    slot_empty: "That dialog slot is empty. /start to begin a story.",
    menu_title: "Menu",
    menu_dialogs_button: "💬 My dialogs",
    menu_settings_button: "⚙️ Settings",
    menu_language_button: "🌐 Language",
    settings_title: "Settings of dialog {slot} ({persona}):",
    intense_mode_label: "Intense mode",
    fantasy_scenes_label: "Fantasy scenes",
    on: "on",
    off: "off",
    settings_need_dialog: "Settings belong to a dialog: /start one first.",
    language_question: "Choose the bot's language:",
    language_set: "The bot now speaks English.",
    minutes_ago: "{n} min ago",
    hours_ago: "{n} h ago",
    days_ago: "{n} d ago",
    just_now: "just now",
    reply_withheld: "(I cannot show that reply. Please write something else, or press \
                     Regenerate.)",
    welcome_back: "*{name} looks up.* You're back. Last time we stopped here: «{last}»",
    commands: [
        ("start", "Choose a character and a story"),
        ("dialogs", "Your three dialogs"),
        ("settings", "Dialog modes and notifications"),
        ("stop", "Stop the reply being written"),
        ("language", "Language of the bot"),
        ("reset", "Clear all dialogs"),
        ("store", "Plans and unlocks"),
        ("status", "Your plan and today's messages"),
        ("memory", "What the character remembers about you"),
        ("forget_me", "Delete everything about you"),
        ("report", "A recap of your week"),
        ("timezone", "Your time zone for notifications"),
        ("menu", "Main menu"),
        ("help", "Help"),
    ],
    shop: &shop::ENGLISH,
    memory: &memory::ENGLISH,
    notifications: &notifications::ENGLISH,
};

const RUSSIAN: Texts = Texts {
    choose_persona: "С кем хотите поговорить? Выберите персонажа:",
    choose_persona_first: "Сначала выберите персонажа для разговора:",
    help: "Я бот, с которым можно общаться с разными персонажами, каждый играет свою историю. \
           Можно вести три диалога одновременно.\n\n\
           /start — выбрать персонажа и историю\n\
           /dialogs — ваши три диалога\n\
           /settings — режимы диалога и уведомления\n\
           /stop — остановить ответ\n\
           /language — язык бота\n\
           /reset — очистить все диалоги\n\
           /store — тарифы и открытия\n\
           /status — ваш тариф и сообщения за сегодня\n\
           /memory — что персонаж помнит о вас\n\
           /forget_me — удалить всё о вас\n\
           /report — итоги вашей недели\n\
           /timezone — ваш часовой пояс для уведомлений\n\
           /menu — главное меню\n\
           /help — список команд",
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
    typing: "… печатает",
    reply_cut_off: "(ответ оборвался — нажмите «Переписать» или пишите дальше)",
    reply_stopped: "(остановлено)",
    reply_interrupted: "Простите, мой ответ на это прервал перезапуск. Нажмите «Повторить», и я \
                        напишу его снова.",
    reply_maybe_delivered: "Перезапуск застал мой последний ответ («{start}») в пути. Если он до \
                            вас не дошёл, нажмите кнопку, чтобы его увидеть.",
    show_reply_button: "📜 Показать ответ",
    reply_gone: "Этого ответа в диалоге больше нет.",
    reply_too_late: "Простите, я не успел ответить на это вовремя. Нажмите «Повторить», и я \
                     попробую ещё раз.",
    message_too_long: "Это сообщение слишком длинное: пожалуйста, уложитесь в {limit} \
                       символов. Персонажу ничего не отправлено.",
    nothing_to_stop: "Сейчас ничего не пишется.",
    regenerate_button: "🔄 Переписать",
    continue_story_button: "▶️ Продолжить",
    only_last_reply: "Переписать можно только последний ответ.",
    nothing_to_regenerate: "Пока нечего переписывать.",
    persona_card: "*{name}*{adult}\n\n{description}",
    choose_story: "Выберите историю:",
    back_button: "« Назад",
    unknown_story: "Этой истории больше нет. Выберите другую:",
    adult_question: "Этот персонаж только для взрослых. Подтвердите, что вам есть 18 лет.",
    adult_confirm_button: "Мне есть 18",
    adult_mark: " (18+)",
    dialog_started: "Диалог {slot}: {persona} — {story}",
    slots_full: "Все три диалога заняты. Какой заменить новой историей? Его история будет \
                 закрыта.",
    replace_slot_button: "Заменить {slot}: {persona}",
    cancel_button: "Отмена",
    cancelled: "Отменено.",
    dialogs_title: "Ваши диалоги:",
    dialog_line: "{slot}. {persona} — {story} ({ago}){active}",
    empty_slot_line: "{slot}. (пусто)",
    active_mark: " ← текущий",
    continue_button: "▶️ Продолжить {slot}",
    clear_button: "🧹 Очистить {slot}",
    new_dialog_button: "➕ Новый диалог",
    no_dialogs: "У вас пока нет диалогов.",
    clear_question: "Очистить диалог {slot} с персонажем {persona}? Персонаж забудет историю, \
                     она начнётся заново.",
    clear_confirm_button: "Да, очистить",
    reset_question: "Очистить все три диалога? Персонажи забудут все истории.",
    reset_confirm_button: "Да, очистить всё",
    reset_done: "Все диалоги очищены. /start — начать новый.",
    switched_to: "Диалог {slot}: {persona} — {story}",
    slot_empty: "Этот слот пуст. /start — начать историю.",
    menu_title: "Меню",
    menu_dialogs_button: "💬 Мои диалоги",
    menu_settings_button: "⚙️ Настройки",
    menu_language_button: "🌐 Язык",
    settings_title: "Настройки диалога {slot} ({persona}):",
    intense_mode_label: "Интенсивный режим",
    fantasy_scenes_label: "Фэнтези-сцены",
    on: "вкл",
    off: "выкл",
    settings_need_dialog: "Настройки относятся к диалогу: сначала начните его через /start.",
    language_question: "Выберите язык бота:",
    language_set: "Теперь бот говорит по-русски.",
    minutes_ago: "{n} мин назад",
    hours_ago: "{n} ч назад",
    days_ago: "{n} дн назад",
    just_now: "только что",
    reply_withheld: "(Этот ответ я показать не могу. Напишите что-нибудь другое или нажмите \
                     «Переписать».)",
    welcome_back: "*{name} поднимает взгляд.* Вы вернулись. В прошлый раз мы остановились здесь: \
                   «{last}»",
    commands: [
        ("start", "Выбрать персонажа и историю"),
        ("dialogs", "Ваши три диалога"),
        ("settings", "Режимы диалога и уведомления"),
        ("stop", "Остановить ответ"),
        ("language", "Язык бота"),
        ("reset", "Очистить все диалоги"),
        ("store", "Тарифы и открытия"),
        ("status", "Ваш тариф и сообщения за сегодня"),
        ("memory", "Что персонаж помнит о вас"),
        ("forget_me", "Удалить всё о вас"),
        ("report", "Итоги вашей недели"),
        ("timezone", "Ваш часовой пояс для уведомлений"),
        ("menu", "Главное меню"),
        ("help", "Помощь"),
    ],
    shop: &shop::RUSSIAN,
    memory: &memory::RUSSIAN,
    notifications: &notifications::RUSSIAN,
};

impl Texts {
    /// The texts for a Telegram language code (see [`Lang::from_telegram`]).
    pub fn for_language(language_code: Option<&str>) -> &'static Texts {
        Lang::from_telegram(language_code).texts()
    }

    /// "5 min ago", "3 h ago", … for an age in milliseconds.
    pub fn ago(&self, age_ms: i64) -> String {
        let minutes = age_ms.max(0) / 60_000;
        if minutes < 1 {
            self.just_now.to_owned()
        } else if minutes < 60 {
            fill(self.minutes_ago, &[("n", &minutes.to_string())])
        } else if minutes < 48 * 60 {
            fill(self.hours_ago, &[("n", &(minutes / 60).to_string())])
        } else {
            fill(self.days_ago, &[("n", &(minutes / 1440).to_string())])
        }
    }
}

/// The first `max_chars` characters of `text`, with "…" when cut.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
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
        assert_eq!(Lang::parse("ru"), Some(Lang::Ru));
        assert_eq!(Lang::parse("de"), None);
    }

    #[test]
    fn ages_are_told_in_the_largest_sensible_unit() {
        assert_eq!(ENGLISH.ago(10_000), "just now");
        assert_eq!(ENGLISH.ago(5 * 60_000), "5 min ago");
        assert_eq!(RUSSIAN.ago(7 * 3_600_000), "7 ч назад");
        assert_eq!(ENGLISH.ago(3 * 86_400_000), "3 d ago");
        assert_eq!(fill("{a} and {b}", &[("a", "x"), ("b", "y")]), "x and y");
    }
}
