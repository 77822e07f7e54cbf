//! What the payment desk tells users: thanks and renewals (scheduled notices, so the
//! user's switches and quiet hours apply), the warning before a plan ends, and refunds (at
//! once).

use crate::domain::catalogue::Grant;
use crate::domain::entitlement::{Entitlement, format_local};
use crate::domain::notification::NotificationKind;
use crate::domain::texts::{Lang, fill};
use crate::payments::DeskDeps;
use crate::payments::messages::PaymentReceived;
use crate::ports::{ChatId, UserId};
use crate::scheduler::planning::{NoticePayload, notice_job};

/// Thanks for a purchase, or news of a renewal, and for a plan the warning three days
/// before it ends (moot, and skipped, if it renews or was extended meanwhile). All of them
/// are scheduled notices: the user's switches and quiet hours apply (a purchase's thanks
/// waits for no quiet hours: the user just paid).
const DAY_MS: i64 = 86_400_000;

pub(super) fn tell_paid(
    deps: &DeskDeps,
    payment: &PaymentReceived,
    product_id: &str,
    entitlement: &Entitlement,
    renewal: bool,
) {
    let lang = Lang::from_telegram(payment.language_code.as_deref());
    let texts = lang.texts();
    let Some(product) = deps.commerce.catalogue.get(product_id) else {
        return;
    };
    let title = product.title_in(lang);
    let now = deps.clock.now_millis();
    let zone = deps.commerce.limits.zone;
    let plan = entitlement
        .plan
        .as_ref()
        .filter(|_| matches!(product.grant, Grant::Plan { .. }));
    let text = match plan {
        Some(plan) => {
            let until = format_local(plan.paid_until, zone);
            let template = if renewal {
                texts.notifications.renewed
            } else {
                texts.shop.paid_plan
            };
            fill(template, &[("title", title), ("until", &until)])
        }
        None => fill(texts.shop.paid_unlock, &[("title", title)]),
    };
    let kind = if renewal {
        NotificationKind::Renewed
    } else {
        NotificationKind::PaymentSucceeded
    };
    let notice = NoticePayload {
        text,
        paid_until: None,
    };
    deps.notifier.notify(notice_job(
        kind,
        payment.user_id,
        now,
        &payment.charge_id,
        notice,
    ));
    if let Some(plan) = plan {
        let warning = fill(
            texts.notifications.subscription_ending,
            &[
                ("title", title),
                ("until", &format_local(plan.paid_until, zone)),
            ],
        );
        let due_at = plan.paid_until.saturating_sub(3 * DAY_MS).max(now);
        let notice = NoticePayload {
            text: warning,
            paid_until: Some(plan.paid_until),
        };
        deps.notifier.notify(notice_job(
            NotificationKind::SubscriptionEnding,
            payment.user_id,
            due_at,
            &plan.paid_until.to_string(),
            notice,
        ));
    }
}

/// Tells a user something at once, without holding the desk: its next message (a
/// pre-checkout with 10 s to answer) never waits for Telegram to take a notice.
fn notify(deps: &DeskDeps, chat: ChatId, text: String) {
    let messenger = deps.messenger.clone();
    tokio::spawn(async move {
        if let Err(error) = messenger.send_text(chat, &text, None).await {
            tracing::info!(%error, "could not tell a user about their payment");
        }
    });
}

/// Tells the user what a refund took back.
pub(super) fn tell_refunded(deps: &DeskDeps, user_id: UserId, lang: Lang, product_id: &str) {
    if let Some(product) = deps.commerce.catalogue.get(product_id) {
        let text = fill(
            lang.texts().shop.refunded,
            &[("title", product.title_in(lang))],
        );
        notify(deps, user_id, text);
    }
}
