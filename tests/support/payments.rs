//! Paying with Telegram Stars in tests, as Telegram does it: the bot makes an invoice, the
//! fake Telegram sends a `pre_checkout_query`, the bot answers it, Telegram charges and
//! sends `successful_payment`; refunds and subscription changes arrive as updates too.

#![allow(dead_code)]

use serde_json::Value;

use super::fake_telegram::{
    pre_checkout_update, refunded_payment_update, subscription_update, successful_payment_update,
};
use super::{TestApp, wait_until, wait_until_async};

/// An invoice the bot made: what to pay for it.
#[derive(Debug, Clone)]
pub struct Bill {
    pub payload: String,
    pub stars: i64,
    pub subscription: bool,
}

impl TestApp {
    /// The application's clock, in Unix milliseconds.
    pub fn clock_now_millis(&self) -> i64 {
        use vitte_actors::ports::Clock;
        self.clock.now_millis()
    }

    /// The application's clock, in Unix seconds (as Telegram writes dates).
    pub fn clock_now_seconds(&self) -> i64 {
        self.clock_now_millis() / 1000
    }

    /// The user presses the store's button for `product`; returns the invoice the bot made
    /// (`sendInvoice`, or `createInvoiceLink` for the subscription).
    pub async fn invoice_for(&self, user_id: i64, product: &str) -> Bill {
        let before = self.telegram.invoices().len();
        self.user_presses(user_id, &format!("$:{product}")).await;
        let invoice = wait_until("an invoice", || {
            self.telegram.invoices().get(before).cloned()
        })
        .await;
        Bill {
            payload: invoice["payload"].as_str().unwrap_or_default().to_owned(),
            stars: invoice["prices"][0]["amount"].as_i64().unwrap_or_default(),
            subscription: invoice.get("subscription_period").is_some(),
        }
    }

    /// Telegram asks whether the user may pay `stars` for `payload`; returns the bot's
    /// answer (`ok`, and `error_message` when it says no).
    pub async fn pre_checkout(&self, user_id: i64, payload: &str, stars: i64) -> Value {
        let update_id = self.next_update_id();
        let query_id = format!("pcq{update_id}");
        self.telegram.open_pre_checkout(&query_id);
        let update = pre_checkout_update(update_id, &query_id, user_id, payload, stars);
        assert_eq!(self.post_update(&update).await, reqwest::StatusCode::OK);
        wait_until("the pre-checkout answered", || {
            self.telegram.pre_checkout_answer(&query_id)
        })
        .await
    }

    /// Telegram charged the user and tells the bot (`successful_payment`).
    pub async fn paid(
        &self,
        user_id: i64,
        bill: &Bill,
        charge_id: &str,
        subscription: Option<(bool, i64)>,
    ) {
        self.telegram.charge(charge_id, user_id, bill.subscription);
        let update = successful_payment_update(
            self.next_update_id(),
            user_id,
            &bill.payload,
            bill.stars,
            charge_id,
            subscription,
        );
        assert_eq!(self.post_update(&update).await, reqwest::StatusCode::OK);
    }

    /// The whole purchase of a one-off product, through to the thanks; returns the charge.
    pub async fn user_buys(&self, user_id: i64, product: &str) -> String {
        let bill = self.invoice_for(user_id, product).await;
        let answer = self.pre_checkout(user_id, &bill.payload, bill.stars).await;
        assert_eq!(answer["ok"], true, "{answer}");
        let charge = format!("charge-{product}-{}", self.next_update_id());
        let thanked = self.thanks_count(user_id);
        self.paid(user_id, &bill, &charge, None).await;
        wait_until("the thanks", || {
            (self.thanks_count(user_id) > thanked).then_some(())
        })
        .await;
        charge
    }

    /// Waits until the chat's last text starts with `prefix`; returns it.
    pub async fn wait_for_last_text_starting(&self, chat_id: i64, prefix: &str) -> String {
        wait_until(&format!("{prefix:?}… last in chat {chat_id}"), || {
            self.telegram
                .sent_texts(chat_id)
                .pop()
                .filter(|text| text.starts_with(prefix))
        })
        .await
    }

    /// How many "Thank you!" messages the user got.
    pub fn thanks_count(&self, user_id: i64) -> usize {
        self.telegram
            .sent_texts(user_id)
            .iter()
            .filter(|text| text.starts_with("Thank you!"))
            .count()
    }

    /// Telegram tells the bot a payment was refunded (`refunded_payment`).
    pub async fn refunded(&self, user_id: i64, bill: &Bill, charge_id: &str) {
        let update = refunded_payment_update(
            self.next_update_id(),
            user_id,
            &bill.payload,
            bill.stars,
            charge_id,
        );
        assert_eq!(self.post_update(&update).await, reqwest::StatusCode::OK);
    }

    /// A `subscription` update: the user's subscription is now `state`.
    pub async fn subscription_is(&self, user_id: i64, bill: &Bill, state: &str) {
        let update = subscription_update(self.next_update_id(), user_id, &bill.payload, state);
        assert_eq!(self.post_update(&update).await, reqwest::StatusCode::OK);
    }

    /// `GET /admin/users/{id}/payments`.
    pub async fn payments_of(&self, user_id: i64) -> Value {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/users/{user_id}/payments"),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON")
    }

    /// The events of the user's payment audit, oldest first.
    pub async fn payment_events(&self, user_id: i64) -> Vec<String> {
        self.payments_of(user_id).await["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|event| event["event"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many times `event` is in the user's audit.
    pub async fn payment_event_count(&self, user_id: i64, event: &str) -> usize {
        self.payment_events(user_id)
            .await
            .iter()
            .filter(|logged| *logged == event)
            .count()
    }

    /// Waits until the user's audit holds `event`.
    pub async fn wait_for_payment_event(&self, user_id: i64, event: &str) {
        wait_until_async(&format!("{event} in the payment audit"), || async {
            self.payment_events(user_id)
                .await
                .iter()
                .any(|e| e == event)
        })
        .await;
    }
}
