//! What a user reads about the store, plans, limits and payments. Placeholders in braces
//! are filled with [`fill`](super::texts::fill).

/// The store's phrases in one language.
#[derive(Debug)]
pub struct ShopTexts {
    pub store_title: &'static str,
    pub store_empty: &'static str,
    /// A product's button: `{title}`, `{stars}`.
    pub buy_button: &'static str,
    /// The message carrying a subscription's link: `{title}`, `{stars}`, `{description}`.
    pub subscribe_text: &'static str,
    /// `{stars}`.
    pub subscribe_button: &'static str,
    pub off_sale: &'static str,
    pub invoice_failed: &'static str,
    pub store_button: &'static str,
    pub status_button: &'static str,
    /// `{title}`, `{until}`.
    pub paid_plan: &'static str,
    /// `{title}`.
    pub paid_unlock: &'static str,
    /// `{title}`.
    pub refunded: &'static str,
    /// The free tier's limit reached: `{limit}`, `{reset}`.
    pub free_limit: &'static str,
    /// A paid plan's fair-use cap reached: `{limit}`, `{reset}`.
    pub fair_use_limit: &'static str,
    pub upgrade_button: &'static str,
    /// A locked toggle of /settings: `{feature}`, `{title}`, `{stars}`.
    pub feature_locked: &'static str,
    /// A locked feature with nothing on sale to unlock it: `{feature}`.
    pub feature_unavailable: &'static str,
    pub status_title: &'static str,
    /// `{limit}`.
    pub plan_free: &'static str,
    /// `{title}`, `{until}`.
    pub plan_active: &'static str,
    /// `{title}`, `{until}`.
    pub plan_grace: &'static str,
    /// `{title}`, `{since}`, `{limit}`.
    pub plan_expired: &'static str,
    pub renewal_on: &'static str,
    pub renewal_off: &'static str,
    /// `{features}`.
    pub unlocked: &'static str,
    pub unlocked_none: &'static str,
    /// `{used}`, `{limit}`, `{reset}`.
    pub usage: &'static str,
    pub cancel_renewal_button: &'static str,
    pub resume_renewal_button: &'static str,
    pub renewal_change_failed: &'static str,
    /// `{until}`.
    pub grace_notice: &'static str,
    /// `{limit}`.
    pub expired_notice: &'static str,
    /// Telegram's subscription renewal failed: `{until}`.
    pub renewal_failed_notice: &'static str,
    // Refusals of a pre-checkout query (Telegram shows them in the payment form).
    pub refuse_invalid: &'static str,
    pub refuse_off_sale: &'static str,
    pub refuse_price: &'static str,
    pub refuse_blocked: &'static str,
    pub refuse_unavailable: &'static str,
}

pub(super) const ENGLISH: ShopTexts = ShopTexts {
    store_title: "⭐ Store. Plans open unlimited messages; unlocks add a mode to every dialog, \
                  for good.",
    store_empty: "Nothing is on sale right now.",
    buy_button: "{title} — {stars} ⭐",
    subscribe_text: "{title}: {description}. {stars} ⭐ every 30 days; cancel any time in \
                     /status.",
    subscribe_button: "Subscribe for {stars} ⭐",
    off_sale: "That is no longer on sale. Here is what is:",
    invoice_failed: "I could not open the payment just now. Please try again in a minute.",
    store_button: "⭐ Store",
    status_button: "📊 My plan",
    paid_plan: "Thank you! {title} is yours until {until}.",
    paid_unlock: "Thank you! {title} is unlocked: turn it on in /settings.",
    refunded: "Your payment for {title} was refunded, and what it gave is withdrawn.",
    free_limit: "That was all {limit} free messages for today; your message is kept. The \
                 count starts over at {reset}. A plan opens unlimited messages now — then \
                 press Retry.",
    fair_use_limit: "You have written {limit} messages today, the fair-use limit; your \
                     message is kept. The count starts over at {reset}.",
    upgrade_button: "⭐ Upgrade",
    feature_locked: "{feature} is a purchase: {title} for {stars} ⭐, for every dialog, for \
                     good.",
    feature_unavailable: "{feature} is not available right now.",
    status_title: "📊 Your plan",
    plan_free: "Free: {limit} messages a day.",
    plan_active: "{title}, paid until {until}.",
    plan_grace: "{title} has ended; still open until {until}. Renew in /store.",
    plan_expired: "{title} ended on {since}. Free again: {limit} messages a day.",
    renewal_on: "Renews by itself every 30 days.",
    renewal_off: "Does not renew.",
    unlocked: "Unlocked: {features}.",
    unlocked_none: "Nothing unlocked yet.",
    usage: "Today: {used} of {limit} messages (the count starts over at {reset}).",
    cancel_renewal_button: "Cancel renewal",
    resume_renewal_button: "Renew again",
    renewal_change_failed: "Telegram could not change the renewal just now. Please try again \
                            later.",
    grace_notice: "Your plan has ended. It stays open until {until}: renew in /store to keep \
                   it.",
    expired_notice: "Your plan is over: back to {limit} free messages a day. /store",
    renewal_failed_notice: "Telegram could not renew your subscription. Your plan stays open \
                            until {until}; renew in /store.",
    refuse_invalid: "This invoice is not valid. Please open /store and try again.",
    refuse_off_sale: "This is no longer on sale. Please open /store.",
    refuse_price: "The price has changed. Please open /store for the current one.",
    refuse_blocked: "Purchases are not available for this account.",
    refuse_unavailable: "Payments are unavailable for a moment. Please try again in a minute.",
};

pub(super) const RUSSIAN: ShopTexts = ShopTexts {
    store_title: "⭐ Магазин. Тарифы открывают сообщения без ограничений; открытия добавляют \
                  режим во все диалоги навсегда.",
    store_empty: "Сейчас ничего не продаётся.",
    buy_button: "{title} — {stars} ⭐",
    subscribe_text: "{title}: {description}. {stars} ⭐ каждые 30 дней; отменить можно в \
                     любой момент в /status.",
    subscribe_button: "Подписаться за {stars} ⭐",
    off_sale: "Это больше не продаётся. Вот что есть:",
    invoice_failed: "Не получилось открыть оплату. Попробуйте через минуту.",
    store_button: "⭐ Магазин",
    status_button: "📊 Мой тариф",
    paid_plan: "Спасибо! {title} — ваш до {until}.",
    paid_unlock: "Спасибо! «{title}» открыт: включите его в /settings.",
    refunded: "Оплата за «{title}» возвращена, и то, что она дала, отозвано.",
    free_limit: "На сегодня все {limit} бесплатных сообщений использованы; ваше сообщение \
                 сохранено. Счёт начнётся заново в {reset}. Тариф открывает сообщения без \
                 ограничений сразу — потом нажмите «Повторить».",
    fair_use_limit: "Сегодня вы написали {limit} сообщений — это предел честного \
                     использования; ваше сообщение сохранено. Счёт начнётся заново в {reset}.",
    upgrade_button: "⭐ Улучшить",
    feature_locked: "«{feature}» — покупка: {title} за {stars} ⭐, для всех диалогов, \
                     навсегда.",
    feature_unavailable: "«{feature}» сейчас недоступен.",
    status_title: "📊 Ваш тариф",
    plan_free: "Бесплатный: {limit} сообщений в день.",
    plan_active: "{title}, оплачен до {until}.",
    plan_grace: "{title} закончился; открыт ещё до {until}. Продлить — в /store.",
    plan_expired: "{title} закончился {since}. Снова бесплатно: {limit} сообщений в день.",
    renewal_on: "Продлевается сам каждые 30 дней.",
    renewal_off: "Не продлевается.",
    unlocked: "Открыто: {features}.",
    unlocked_none: "Пока ничего не открыто.",
    usage: "Сегодня: {used} из {limit} сообщений (счёт начнётся заново в {reset}).",
    cancel_renewal_button: "Отменить продление",
    resume_renewal_button: "Продлевать снова",
    renewal_change_failed: "Telegram не смог изменить продление. Попробуйте позже.",
    grace_notice: "Ваш тариф закончился. Он открыт до {until}: продлите в /store, чтобы \
                   сохранить его.",
    expired_notice: "Ваш тариф закончился: снова {limit} бесплатных сообщений в день. /store",
    renewal_failed_notice: "Telegram не смог продлить подписку. Тариф открыт до {until}; \
                            продлить можно в /store.",
    refuse_invalid: "Этот счёт недействителен. Откройте /store и попробуйте снова.",
    refuse_off_sale: "Это больше не продаётся. Откройте /store.",
    refuse_price: "Цена изменилась. Откройте /store, чтобы увидеть новую.",
    refuse_blocked: "Покупки недоступны для этого аккаунта.",
    refuse_unavailable: "Оплата на минуту недоступна. Попробуйте ещё раз чуть позже.",
};
