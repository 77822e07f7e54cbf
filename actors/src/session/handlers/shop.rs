//! The store (/store and buying), the user's plan (/status, with the renewal switch), and the
//! daily limit every reply is checked against, from the entitlement the session holds.

use crate::domain::catalogue::{Feature, Product};
use crate::domain::entitlement::{Denial, PlanState, format_local, next_day_start};
use crate::domain::event::ApiOutcome;
use crate::domain::texts::fill;
use crate::payments::InvoicePayload;
use crate::payments::messages::RenewalError;
use crate::ports::Keyboard;
use crate::ports::clock::millis;
use crate::ports::payments::Invoice;
use crate::session::buttons::ButtonData;
use crate::session::keyboards::{button, link_button, retry_keyboard};
use crate::session::state::SessionState;
use crate::session::turn::Turn;

/// The catalogue's products on sale, one button each; `notice` replaces the title (an
/// explanation of why the store is shown).
pub(super) async fn show_store(turn: &Turn<'_>, notice: Option<&str>) {
    let shop = turn.texts.shop;
    let mut rows: Vec<_> = turn
        .deps
        .commerce
        .catalogue
        .on_sale()
        .map(|product| vec![buy_button(turn, product)])
        .collect();
    if rows.is_empty() {
        turn.say(shop.store_empty, None).await;
        return;
    }
    rows.push(vec![button(shop.status_button, ButtonData::Status)]);
    turn.say(notice.unwrap_or(shop.store_title), Some(&Keyboard { rows }))
        .await;
}

fn buy_button(turn: &Turn<'_>, product: &Product) -> crate::ports::Button {
    let label = fill(
        turn.texts.shop.buy_button,
        &[
            ("title", product.title_in(turn.lang)),
            ("stars", &product.stars.to_string()),
        ],
    );
    button(
        &label,
        ButtonData::Buy {
            product: product.id.clone(),
        },
    )
}

/// A product's invoice: a one-off purchase as an invoice message; the subscription as a link
/// (Telegram makes subscriptions only with `createInvoiceLink`).
pub(super) async fn buy(turn: &Turn<'_>, product_id: &str) {
    let shop = turn.texts.shop;
    let commerce = &turn.deps.commerce;
    let Some(product) = commerce
        .catalogue
        .get(product_id)
        .filter(|product| product.on_sale)
    else {
        show_store(turn, Some(shop.off_sale)).await;
        return;
    };
    let payload = commerce.signer.sign(&InvoicePayload {
        product_id: product.id.clone(),
        user_id: turn.sender.user_id,
        stars: product.stars,
    });
    let invoice = Invoice {
        title: product.title_in(turn.lang).to_owned(),
        description: product.description_in(turn.lang).to_owned(),
        payload,
        stars: product.stars,
        subscription: product.is_subscription(),
    };
    let outcome = if invoice.subscription {
        match commerce.api.create_invoice_link(&invoice).await {
            Ok(link) => {
                let stars = product.stars.to_string();
                let text = fill(
                    shop.subscribe_text,
                    &[
                        ("title", &invoice.title),
                        ("description", &invoice.description),
                        ("stars", &stars),
                    ],
                );
                let label = fill(shop.subscribe_button, &[("stars", &stars)]);
                let keyboard = Keyboard {
                    rows: vec![vec![link_button(&label, &link)]],
                };
                turn.say(&text, Some(&keyboard)).await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    } else {
        commerce.api.send_invoice(turn.chat(), &invoice).await
    };
    if let Err(error) = outcome {
        tracing::warn!(%error, product = product.id, "could not open an invoice");
        turn.say(shop.invoice_failed, None).await;
    }
}

/// Whether one more reply fits today's limit; counted if it does. Every LLM call asks.
pub(super) fn take_allowance(turn: &Turn<'_>, state: &mut SessionState) -> Result<(), Denial> {
    let limits = &turn.deps.commerce.limits;
    let now = turn.now();
    let used = state.replies_today(now, limits.zone);
    state.entitlement.allows_another(used, now, limits)?;
    state.usage.replies += 1;
    Ok(())
}

/// Tells the user the limit is reached (never silence): when it starts over, and an upgrade
/// button (with Retry, for after the purchase).
pub(super) async fn tell_denied(turn: &Turn<'_>, state: &mut SessionState, denial: Denial) {
    let deps = turn.deps;
    deps.metrics
        .entitlement_denials_total
        .with_label_values(&[denial.as_str()])
        .inc();
    let limits = &deps.commerce.limits;
    let now = turn.now();
    let daily_limit = state.entitlement.daily_limit(now, limits);
    turn.report(ApiOutcome::DailyLimit {
        limit: daily_limit,
        used: state.replies_today(now, limits.zone),
        resets_at: next_day_start(now, limits.zone),
    });
    let limit = daily_limit.to_string();
    let reset = format_local(next_day_start(now, limits.zone), limits.zone);
    let shop = turn.texts.shop;
    let template = match denial {
        Denial::FreeLimit => shop.free_limit,
        Denial::FairUse => shop.fair_use_limit,
    };
    let text = fill(template, &[("limit", &limit), ("reset", &reset)]);
    let mut keyboard = retry_keyboard(turn.texts);
    if denial == Denial::FreeLimit {
        keyboard.rows[0].insert(0, button(shop.upgrade_button, ButtonData::Store));
    }
    turn.say(&text, Some(&keyboard)).await;
}

/// A locked feature's toggle: its unlock is offered (or, off sale, said unavailable).
pub(super) async fn offer_unlock(turn: &Turn<'_>, feature: Feature, feature_name: &str) {
    let shop = turn.texts.shop;
    match turn.deps.commerce.catalogue.unlock_for(feature) {
        Some(product) => {
            let text = fill(
                shop.feature_locked,
                &[
                    ("feature", feature_name),
                    ("title", product.title_in(turn.lang)),
                    ("stars", &product.stars.to_string()),
                ],
            );
            let keyboard = Keyboard {
                rows: vec![vec![buy_button(turn, product)]],
            };
            turn.say(&text, Some(&keyboard)).await;
        }
        None => {
            let text = fill(shop.feature_unavailable, &[("feature", feature_name)]);
            turn.say(&text, None).await;
        }
    }
}

/// /status: the plan and its end (or grace end), renewal, unlocked features, today's usage.
pub(super) async fn show_status(turn: &Turn<'_>, state: &mut SessionState) {
    let shop = turn.texts.shop;
    let deps = turn.deps;
    let limits = &deps.commerce.limits;
    let now = turn.now();
    let zone = limits.zone;
    let entitlement = &state.entitlement;
    let plan_title = entitlement.plan.as_ref().map_or_else(String::new, |plan| {
        deps.commerce.catalogue.get(&plan.product_id).map_or_else(
            || plan.product_id.clone(),
            |p| p.title_in(turn.lang).to_owned(),
        )
    });
    let free_limit = limits.free_daily_messages.to_string();
    let mut lines = vec![shop.status_title.to_owned()];
    let state_now = entitlement.plan_state(now, limits.grace);
    lines.push(match state_now {
        PlanState::Free => fill(shop.plan_free, &[("limit", &free_limit)]),
        PlanState::Active { until } => fill(
            shop.plan_active,
            &[
                ("title", &plan_title),
                ("until", &format_local(until, zone)),
            ],
        ),
        PlanState::Grace { until } => fill(
            shop.plan_grace,
            &[
                ("title", &plan_title),
                ("until", &format_local(until, zone)),
            ],
        ),
        PlanState::Expired { since } => fill(
            shop.plan_expired,
            &[
                ("title", &plan_title),
                ("since", &format_local(since - millis(limits.grace), zone)),
                ("limit", &free_limit),
            ],
        ),
    });
    let subscription = entitlement
        .plan
        .as_ref()
        .filter(|plan| plan.subscription_charge.is_some() && state_now.is_paid());
    if let Some(plan) = subscription {
        lines.push(
            if plan.renewing {
                shop.renewal_on
            } else {
                shop.renewal_off
            }
            .to_owned(),
        );
    }
    let features: Vec<String> = entitlement
        .unlocked
        .iter()
        .map(|feature| feature_name(turn, *feature).to_owned())
        .collect();
    lines.push(if features.is_empty() {
        shop.unlocked_none.to_owned()
    } else {
        fill(shop.unlocked, &[("features", &features.join(", "))])
    });
    let limit = entitlement.daily_limit(now, limits).to_string();
    let subscription = subscription.cloned();
    let used = state.replies_today(now, zone).to_string();
    let reset = format_local(next_day_start(now, zone), zone);
    lines.push(fill(
        shop.usage,
        &[("used", &used), ("limit", &limit), ("reset", &reset)],
    ));
    let mut rows = Vec::new();
    if let Some(plan) = &subscription {
        rows.push(vec![if plan.renewing {
            button(
                shop.cancel_renewal_button,
                ButtonData::Renewal { renewing: false },
            )
        } else {
            button(
                shop.resume_renewal_button,
                ButtonData::Renewal { renewing: true },
            )
        }]);
    }
    rows.push(vec![button(shop.store_button, ButtonData::Store)]);
    turn.say(&lines.join("\n"), Some(&Keyboard { rows })).await;
}

/// A feature's name as /settings shows it.
pub(super) fn feature_name(turn: &Turn<'_>, feature: Feature) -> &'static str {
    match feature {
        Feature::IntenseMode => turn.texts.intense_mode_label,
        Feature::FantasyScenes => turn.texts.fantasy_scenes_label,
    }
}

/// The renewal switch of /status: through the payment desk (Telegram, then storage), then
/// /status again.
pub(super) async fn set_renewal(turn: &Turn<'_>, state: &mut SessionState, renewing: bool) {
    match turn
        .deps
        .desk
        .set_renewal(turn.sender.user_id, renewing)
        .await
    {
        Ok(entitlement) => state.apply_entitlement(entitlement),
        Err(RenewalError::NoSubscription) => {}
        Err(error) => {
            tracing::warn!(%error, "could not switch a subscription's renewal");
            turn.say(turn.texts.shop.renewal_change_failed, None).await;
            return;
        }
    }
    show_status(turn, state).await;
}
