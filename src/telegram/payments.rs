//! Telegram Stars: the payment methods of the Bot API (as plain JSON through
//! [`RawBotApi`]), and the payment updates read from an update's raw JSON. teloxide 0.17
//! (Bot API 9.1) knows some of these and not the `subscription` update (10.2); reading them
//! all here keeps Telegram's payment wire format in one place.

use async_trait::async_trait;
use serde_json::{Value, json};
use vitte_actors::payments::messages::{
    PaymentReceived, PaymentRefunded, PaymentUpdate, PreCheckout, SubscriptionChanged,
    SubscriptionState,
};
use vitte_actors::ports::payments::{Invoice, PaymentCallError, PaymentsApi};
use vitte_actors::ports::{ChatId, UserId};

use super::raw::{RawBotApi, RawError};
use vitte_actors::domain::catalogue::SUBSCRIPTION_PERIOD_SECONDS;

/// The Bot API's payment methods, for Telegram Stars (`XTR`, no provider token).
pub struct StarsApi {
    raw: RawBotApi,
}

impl StarsApi {
    pub fn new(raw: RawBotApi) -> StarsApi {
        StarsApi { raw }
    }
}

fn call_error(error: RawError) -> PaymentCallError {
    match error {
        RawError::Api { description, .. } => PaymentCallError::Refused(description),
        RawError::Network { reason, .. } => PaymentCallError::Unreachable(reason),
    }
}

/// The fields `sendInvoice` and `createInvoiceLink` share: one price, in Stars.
fn invoice_fields(invoice: &Invoice) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("title".into(), json!(invoice.title));
    fields.insert("description".into(), json!(invoice.description));
    fields.insert("payload".into(), json!(invoice.payload));
    fields.insert("provider_token".into(), json!(""));
    fields.insert("currency".into(), json!("XTR"));
    fields.insert(
        "prices".into(),
        json!([{ "label": invoice.title, "amount": invoice.stars }]),
    );
    fields
}

#[async_trait]
impl PaymentsApi for StarsApi {
    async fn send_invoice(&self, chat: ChatId, invoice: &Invoice) -> Result<(), PaymentCallError> {
        let mut body = invoice_fields(invoice);
        body.insert("chat_id".into(), json!(chat));
        self.raw
            .call("sendInvoice", &Value::Object(body))
            .await
            .map(drop)
            .map_err(call_error)
    }

    async fn create_invoice_link(&self, invoice: &Invoice) -> Result<String, PaymentCallError> {
        let mut body = invoice_fields(invoice);
        if invoice.subscription {
            body.insert(
                "subscription_period".into(),
                json!(SUBSCRIPTION_PERIOD_SECONDS),
            );
        }
        let link = self
            .raw
            .call("createInvoiceLink", &Value::Object(body))
            .await
            .map_err(call_error)?;
        link.as_str()
            .map(str::to_owned)
            .ok_or_else(|| PaymentCallError::Unreachable("createInvoiceLink: no link".into()))
    }

    async fn answer_pre_checkout(
        &self,
        query_id: &str,
        refusal: Option<&str>,
    ) -> Result<(), PaymentCallError> {
        let mut body = json!({ "pre_checkout_query_id": query_id, "ok": refusal.is_none() });
        if let Some(reason) = refusal {
            body["error_message"] = json!(reason);
        }
        self.raw
            .call("answerPreCheckoutQuery", &body)
            .await
            .map(drop)
            .map_err(call_error)
    }

    async fn refund_star_payment(
        &self,
        user_id: UserId,
        charge_id: &str,
    ) -> Result<(), PaymentCallError> {
        let body = json!({ "user_id": user_id, "telegram_payment_charge_id": charge_id });
        self.raw
            .call("refundStarPayment", &body)
            .await
            .map(drop)
            .map_err(call_error)
    }

    async fn edit_star_subscription(
        &self,
        user_id: UserId,
        charge_id: &str,
        canceled: bool,
    ) -> Result<(), PaymentCallError> {
        let body = json!({
            "user_id": user_id,
            "telegram_payment_charge_id": charge_id,
            "is_canceled": canceled,
        });
        self.raw
            .call("editUserStarSubscription", &body)
            .await
            .map(drop)
            .map_err(call_error)
    }
}

/// Payments are not possible without Telegram (`vitte chat`): every call is refused.
pub struct NoPayments;

#[async_trait]
impl PaymentsApi for NoPayments {
    async fn send_invoice(
        &self,
        _chat: ChatId,
        _invoice: &Invoice,
    ) -> Result<(), PaymentCallError> {
        Err(no_telegram())
    }

    async fn create_invoice_link(&self, _invoice: &Invoice) -> Result<String, PaymentCallError> {
        Err(no_telegram())
    }

    async fn answer_pre_checkout(
        &self,
        _query_id: &str,
        _refusal: Option<&str>,
    ) -> Result<(), PaymentCallError> {
        Err(no_telegram())
    }

    async fn refund_star_payment(
        &self,
        _user_id: UserId,
        _charge_id: &str,
    ) -> Result<(), PaymentCallError> {
        Err(no_telegram())
    }

    async fn edit_star_subscription(
        &self,
        _user_id: UserId,
        _charge_id: &str,
        _canceled: bool,
    ) -> Result<(), PaymentCallError> {
        Err(no_telegram())
    }
}

fn no_telegram() -> PaymentCallError {
    PaymentCallError::Refused("payments need Telegram".into())
}

/// The payment update in `update` (a raw Telegram update), if it is one: a
/// `pre_checkout_query`, a `subscription` change, or a private message carrying
/// `successful_payment` or `refunded_payment`.
pub fn payment_update(update: &Value) -> Option<PaymentUpdate> {
    let update_id = update["update_id"].as_i64();
    let user = |value: &Value| -> Option<(UserId, Option<String>)> {
        let id = value["id"].as_i64()?;
        Some((id, value["language_code"].as_str().map(str::to_owned)))
    };
    let text = |value: &Value| value.as_str().map(str::to_owned);
    if let Some(query) = update.get("pre_checkout_query") {
        let (user_id, language_code) = user(&query["from"])?;
        return Some(PaymentUpdate::PreCheckout(PreCheckout {
            update_id,
            query_id: text(&query["id"])?,
            user_id,
            language_code,
            currency: text(&query["currency"])?,
            total_amount: query["total_amount"].as_i64()?,
            payload: text(&query["invoice_payload"])?,
        }));
    }
    if let Some(change) = update.get("subscription") {
        let (user_id, language_code) = user(&change["user"])?;
        return Some(PaymentUpdate::Subscription(SubscriptionChanged {
            update_id,
            user_id,
            language_code,
            payload: text(&change["invoice_payload"])?,
            state: SubscriptionState::parse(change["state"].as_str()?)?,
        }));
    }
    let message = update.get("message")?;
    if message["chat"]["type"].as_str() != Some("private") {
        return None;
    }
    let (user_id, language_code) = user(&message["from"])?;
    let chat_id = message["chat"]["id"].as_i64()?;
    if let Some(payment) = message.get("successful_payment") {
        return Some(PaymentUpdate::Received(PaymentReceived {
            update_id,
            user_id,
            chat_id,
            language_code,
            charge_id: text(&payment["telegram_payment_charge_id"])?,
            currency: text(&payment["currency"])?,
            total_amount: payment["total_amount"].as_i64()?,
            payload: text(&payment["invoice_payload"])?,
            is_recurring: payment["is_recurring"].as_bool().unwrap_or(false),
            is_first_recurring: payment["is_first_recurring"].as_bool().unwrap_or(false),
            subscription_expiration_date: payment["subscription_expiration_date"].as_i64(),
        }));
    }
    if let Some(refund) = message.get("refunded_payment") {
        return Some(PaymentUpdate::Refunded(PaymentRefunded {
            update_id,
            user_id,
            chat_id,
            language_code,
            charge_id: text(&refund["telegram_payment_charge_id"])?,
        }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_payment_update_kind_is_read_from_the_raw_json() {
        let query = json!({"update_id": 1, "pre_checkout_query": {"id": "q1",
            "from": {"id": 42, "is_bot": false, "first_name": "Ann", "language_code": "ru"},
            "currency": "XTR", "total_amount": 150, "invoice_payload": "p"}});
        let Some(PaymentUpdate::PreCheckout(query)) = payment_update(&query) else {
            panic!("a pre-checkout");
        };
        assert_eq!((query.user_id, query.total_amount), (42, 150));
        assert_eq!(query.language_code.as_deref(), Some("ru"));

        let paid = json!({"update_id": 2, "message": {"message_id": 5, "date": 1,
            "chat": {"id": 42, "type": "private"}, "from": {"id": 42, "is_bot": false,
            "first_name": "Ann"}, "successful_payment": {"currency": "XTR",
            "total_amount": 450, "invoice_payload": "p", "telegram_payment_charge_id": "c1",
            "provider_payment_charge_id": "", "is_recurring": true, "is_first_recurring": true,
            "subscription_expiration_date": 1800000000}}});
        let Some(PaymentUpdate::Received(paid)) = payment_update(&paid) else {
            panic!("a payment");
        };
        assert_eq!(paid.charge_id, "c1");
        assert!(paid.is_recurring && paid.is_first_recurring);
        assert_eq!(paid.subscription_expiration_date, Some(1_800_000_000));

        let change = json!({"update_id": 3, "subscription": {"user": {"id": 42,
            "is_bot": false, "first_name": "Ann"}, "invoice_payload": "p", "state": "failed"}});
        let Some(PaymentUpdate::Subscription(change)) = payment_update(&change) else {
            panic!("a subscription change");
        };
        assert_eq!(change.state, SubscriptionState::Failed);
    }

    #[test]
    fn texts_group_payments_and_broken_payment_updates_are_not_payments() {
        let text = json!({"update_id": 4, "message": {"message_id": 5, "date": 1,
            "chat": {"id": 42, "type": "private"}, "from": {"id": 42}, "text": "hi"}});
        assert_eq!(payment_update(&text), None);
        let group = json!({"update_id": 5, "message": {"chat": {"id": -1, "type": "group"},
            "from": {"id": 42}, "successful_payment": {}}});
        assert_eq!(payment_update(&group), None);
        let unknown_state = json!({"update_id": 6, "subscription": {"user": {"id": 42},
            "invoice_payload": "p", "state": "paused"}});
        assert_eq!(payment_update(&unknown_state), None);
    }
}
