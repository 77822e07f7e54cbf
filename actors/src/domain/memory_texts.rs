//! What a user reads about what the personas remember: /memory and /forget_me. Placeholders
//! in braces are filled with [`fill`](super::texts::fill).

/// Memory's phrases in one language.
#[derive(Debug)]
pub struct MemoryTexts {
    /// /memory's heading: `{persona}`, `{page}`, `{pages}`.
    pub list_title: &'static str,
    /// /memory with nothing remembered: `{persona}`.
    pub nothing_remembered: &'static str,
    /// /memory without a dialog.
    pub no_dialog: &'static str,
    /// The button that forgets item `{n}`.
    pub forget_item: &'static str,
    pub forget_all: &'static str,
    pub previous_page: &'static str,
    pub next_page: &'static str,
    pub forgotten_one: &'static str,
    /// `{count}`.
    pub forgotten_all: &'static str,
    /// /forget_me's question.
    pub forget_me_question: &'static str,
    pub forget_me_confirm: &'static str,
    pub forget_me_done: &'static str,
    pub forget_failed: &'static str,
}

pub const ENGLISH: MemoryTexts = MemoryTexts {
    list_title: "What {persona} remembers about you (page {page} of {pages}):",
    nothing_remembered: "{persona} does not remember anything about you yet.",
    no_dialog: "Start a dialog first: memories belong to the characters you talk to.",
    forget_item: "🗑 {n}",
    forget_all: "Forget everything",
    previous_page: "‹ Back",
    next_page: "More ›",
    forgotten_one: "Forgotten. It will not come up again.",
    forgotten_all: "Forgotten: {count}. None of it will come up again.",
    forget_me_question: "Delete everything about you? Your dialogs, messages, memories and \
                         summaries are erased for good; payment records stay as the law \
                         requires, with no message content. This cannot be undone.",
    forget_me_confirm: "Yes, delete everything",
    forget_me_done: "Done: everything about you is deleted. Send /start to begin anew.",
    forget_failed: "Something went wrong and nothing was deleted. Please try again later.",
};

pub const RUSSIAN: MemoryTexts = MemoryTexts {
    list_title: "Что {persona} помнит о вас (страница {page} из {pages}):",
    nothing_remembered: "{persona} пока ничего о вас не помнит.",
    no_dialog: "Сначала начните диалог: воспоминания принадлежат персонажам, с которыми вы \
                общаетесь.",
    forget_item: "🗑 {n}",
    forget_all: "Забыть всё",
    previous_page: "‹ Назад",
    next_page: "Ещё ›",
    forgotten_one: "Забыто. Больше не всплывёт.",
    forgotten_all: "Забыто: {count}. Ничего из этого больше не всплывёт.",
    forget_me_question: "Удалить всё о вас? Диалоги, сообщения, воспоминания и краткие \
                         пересказы будут стёрты навсегда; записи о платежах остаются, как \
                         требует закон, без содержания сообщений. Отменить нельзя.",
    forget_me_confirm: "Да, удалить всё",
    forget_me_done: "Готово: всё о вас удалено. Отправьте /start, чтобы начать заново.",
    forget_failed: "Что-то пошло не так, ничего не удалено. Попробуйте позже.",
};
