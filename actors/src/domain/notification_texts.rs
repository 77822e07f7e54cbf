//! The phrases of proactive messages and of their settings, in English and Russian.

/// Notification phrases in one language.
#[derive(Debug)]
pub struct NotificationTexts {
    /// The plan ends soon and does not renew: `{title}`, `{until}`.
    pub subscription_ending: &'static str,
    /// The subscription renewed: `{title}`, `{until}`.
    pub renewed: &'static str,
    /// A milestone with a persona: `{persona}`, `{count}`.
    pub milestone: &'static str,
    /// The recap's heading, weekly and monthly.
    pub weekly_title: &'static str,
    pub monthly_title: &'static str,
    /// /report when there is nothing to summarise.
    pub report_empty: &'static str,
    /// /report while it is written.
    pub report_writing: &'static str,
    /// /report when the model could not write it.
    pub report_failed: &'static str,
    /// What the model is asked for a recap: `{language}`.
    pub recap_instruction: &'static str,
    /// What the persona is asked when the user has been away: `{language}`, `{days}`.
    pub inactivity_instruction: &'static str,
    /// The inactivity message when the model cannot write one: `{persona}`.
    pub inactivity_fallback: &'static str,
    /// The language named to the model.
    pub language_name: &'static str,
    /// /settings: the notifications heading: `{quiet}`, `{zone}`.
    pub settings_title: &'static str,
    /// The labels of the topics' switches, in `Topic::ALL` order.
    pub topics: [&'static str; 6],
    /// The quiet hours button: `{quiet}`.
    pub quiet_label: &'static str,
    pub quiet_none: &'static str,
    /// The time zone button: `{zone}`.
    pub zone_label: &'static str,
    /// /timezone without a valid zone.
    pub zone_usage: &'static str,
    /// /timezone done: `{zone}`.
    pub zone_set: &'static str,
}

pub static ENGLISH: NotificationTexts = NotificationTexts {
    subscription_ending: "Your plan «{title}» ends on {until} and will not renew by itself. /shop to extend it.",
    renewed: "Your plan «{title}» renewed. It now runs until {until}. Thank you!",
    milestone: "🎉 {count} messages with {persona}! Thank you for every one of them.",
    weekly_title: "📖 Your week in stories",
    monthly_title: "📚 Your month in stories",
    report_empty: "There is nothing to recap yet: no messages in the last seven days.",
    report_writing: "Writing your report…",
    report_failed: "I could not write the report right now. Please try /report again later.",
    recap_instruction: "Write a warm recap, in {language}, of the user's conversations below with the characters named: what happened in each story, in a few short paragraphs. Speak to the user as \"you\". No preamble.",
    inactivity_instruction: "The user has not written to you for {days} days. Write one short message (one or two sentences), in {language}, fully in character, that invites them back to your story. No preamble, no quotes.",
    inactivity_fallback: "{persona} misses your conversations. Write whenever you like — the story is waiting.",
    language_name: "English",
    settings_title: "🔔 Notifications\nQuiet hours: {quiet}\nTime zone: {zone}",
    topics: [
        "Subscription",
        "Payments",
        "Reminders",
        "Weekly and monthly recaps",
        "Milestones",
        "Announcements",
    ],
    quiet_label: "Quiet hours: {quiet}",
    quiet_none: "none",
    zone_label: "Time zone: {zone}",
    zone_usage: "Send your time zone like this: /timezone Europe/Berlin",
    zone_set: "Time zone set: {zone}.",
};

pub static RUSSIAN: NotificationTexts = NotificationTexts {
    subscription_ending: "Ваш план «{title}» заканчивается {until} и сам не продлится. /shop — продлить.",
    renewed: "План «{title}» продлён до {until}. Спасибо!",
    milestone: "🎉 {count} сообщений с персонажем {persona}! Спасибо за каждое.",
    weekly_title: "📖 Ваша неделя в историях",
    monthly_title: "📚 Ваш месяц в историях",
    report_empty: "Пока нечего подытожить: за последние семь дней сообщений не было.",
    report_writing: "Пишу ваш отчёт…",
    report_failed: "Не получилось написать отчёт. Попробуйте /report позже.",
    recap_instruction: "Напиши тёплый пересказ на языке: {language} — разговоров пользователя с названными персонажами: что произошло в каждой истории, в нескольких коротких абзацах. Обращайся к пользователю на «вы». Без вступлений.",
    inactivity_instruction: "Пользователь не писал тебе {days} дней. Напиши одно короткое сообщение (одно-два предложения) на языке: {language}, полностью в образе, которое зовёт его вернуться в историю. Без вступлений и кавычек.",
    inactivity_fallback: "{persona} скучает по вашим разговорам. Пишите, когда захотите, — история ждёт.",
    language_name: "русский",
    settings_title: "🔔 Уведомления\nТихие часы: {quiet}\nЧасовой пояс: {zone}",
    topics: [
        "Подписка",
        "Платежи",
        "Напоминания",
        "Итоги недели и месяца",
        "Юбилеи",
        "Объявления",
    ],
    quiet_label: "Тихие часы: {quiet}",
    quiet_none: "нет",
    zone_label: "Часовой пояс: {zone}",
    zone_usage: "Пришлите часовой пояс так: /timezone Europe/Moscow",
    zone_set: "Часовой пояс: {zone}.",
};
