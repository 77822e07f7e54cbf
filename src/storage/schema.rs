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

diesel::joinable!(dialogs -> users (user_id));
diesel::joinable!(messages -> dialogs (dialog_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    dialogs,
    messages,
    inbox,
    health_probe,
    token_usage
);
