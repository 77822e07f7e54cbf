//! The tables, shared by both backends (see `migrations/`).

diesel::table! {
    users (id) {
        id -> BigInt,
        chat_id -> BigInt,
        first_name -> Text,
        language_code -> Nullable<Text>,
        active_slot -> Nullable<Integer>,
        created_at -> BigInt,
        updated_at -> BigInt,
        language -> Nullable<Text>,
        adult_confirmed_at -> Nullable<BigInt>,
        blocked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    dialogs (id) {
        id -> BigInt,
        user_id -> BigInt,
        slot -> Integer,
        persona_id -> Text,
        story_id -> Nullable<Text>,
        created_at -> BigInt,
        last_active_at -> BigInt,
        closed_at -> Nullable<BigInt>,
        intense_mode -> Bool,
        fantasy_scenes -> Bool,
        persona_messages -> Integer,
        extracted_through -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        dialog_id -> BigInt,
        role -> Text,
        content -> Text,
        token_count -> Integer,
        status -> Text,
        telegram_message_id -> Nullable<BigInt>,
        created_at -> BigInt,
        provider -> Nullable<Text>,
        telegram_part_ids -> Nullable<Text>,
        update_id -> Nullable<BigInt>,
        reply_message_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    token_usage (user_id, slot, day) {
        user_id -> BigInt,
        slot -> Integer,
        day -> BigInt,
        prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        requests -> BigInt,
    }
}

diesel::table! {
    /// Accepted Telegram updates: stored before Telegram is told they arrived, with their raw
    /// JSON (`payload`) until handled.
    inbox (update_id) {
        update_id -> BigInt,
        received_at -> BigInt,
        user_id -> Nullable<BigInt>,
        payload -> Nullable<Text>,
    }
}

diesel::table! {
    health_probe (id) {
        id -> Integer,
        probed_at -> BigInt,
    }
}

diesel::table! {
    /// What each user has bought: one row, changed in transactions with their audit line.
    entitlements (user_id) {
        user_id -> BigInt,
        plan_product -> Nullable<Text>,
        paid_until -> Nullable<BigInt>,
        renewing -> Bool,
        subscription_charge -> Nullable<Text>,
        unlocked -> Text,
        plan_state -> Text,
        blocked -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Telegram Stars payments, once per charge.
    payments (charge_id) {
        charge_id -> Text,
        user_id -> BigInt,
        product_id -> Text,
        stars -> Integer,
        kind -> Text,
        days_granted -> Integer,
        status -> Text,
        created_at -> BigInt,
        refunded_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Pre-checkout queries and the answers given.
    checkouts (query_id) {
        query_id -> Text,
        user_id -> BigInt,
        payload -> Text,
        accepted -> Bool,
        refusal -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    /// The payment audit: every transition with its time and source.
    payment_events (id) {
        id -> BigInt,
        user_id -> BigInt,
        charge_id -> Nullable<Text>,
        event -> Text,
        source -> Text,
        detail -> Text,
        at -> BigInt,
    }
}

diesel::table! {
    /// Long-term memories: facts about a user, with their embedding and history.
    memories (id) {
        id -> BigInt,
        user_id -> BigInt,
        persona_id -> Nullable<Text>,
        dialog_id -> Nullable<BigInt>,
        text -> Text,
        category -> Text,
        importance -> Integer,
        embedding -> Binary,
        content_hash -> Text,
        created_at -> BigInt,
        confirmed_at -> BigInt,
        superseded_by -> Nullable<BigInt>,
        invalidated_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The summary standing in for a dialog's earlier part in prompts.
    dialog_summaries (dialog_id) {
        dialog_id -> BigInt,
        through_message_id -> BigInt,
        text -> Text,
        token_count -> Integer,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// The times of replies /forget_me deleted (no content), for the daily limit.
    forgotten_replies (id) {
        id -> BigInt,
        user_id -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    /// Proactive messages to send when due, unique by idempotency key.
    scheduled_jobs (id) {
        id -> BigInt,
        kind -> Text,
        user_id -> BigInt,
        due_at -> BigInt,
        payload -> Text,
        idempotency_key -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// What each user chose about notifications.
    notification_settings (user_id) {
        user_id -> BigInt,
        disabled_topics -> Text,
        quiet_start -> Nullable<Integer>,
        quiet_end -> Nullable<Integer>,
        time_zone -> Nullable<Text>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Operators' broadcasts.
    broadcasts (id) {
        id -> BigInt,
        text -> Text,
        segment -> Text,
        status -> Text,
        total -> BigInt,
        created_at -> BigInt,
        finished_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One per broadcast and recipient.
    broadcast_deliveries (broadcast_id, user_id) {
        broadcast_id -> BigInt,
        user_id -> BigInt,
        status -> Text,
        due_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    event_log (id) {
        id -> BigInt,
        at -> BigInt,
        severity -> Text,
        kind -> Text,
        user_id -> Nullable<BigInt>,
        detail -> Text,
    }
}

diesel::joinable!(dialogs -> users (user_id));
diesel::joinable!(messages -> dialogs (dialog_id));
diesel::joinable!(broadcast_deliveries -> broadcasts (broadcast_id));
diesel::allow_tables_to_appear_in_same_query!(
    event_log,
    users,
    dialogs,
    messages,
    inbox,
    health_probe,
    token_usage,
    entitlements,
    payments,
    checkouts,
    payment_events,
    memories,
    dialog_summaries,
    forgotten_replies,
    scheduled_jobs,
    notification_settings,
    broadcasts,
    broadcast_deliveries
);
