-- Users, their dialogs (a persona in a slot), messages, and processed Telegram updates.
-- Times are Unix milliseconds (BIGINT) so both backends share one schema.
CREATE TABLE users (
    id BIGINT PRIMARY KEY NOT NULL,           -- Telegram user id
    chat_id BIGINT NOT NULL,
    first_name TEXT NOT NULL,
    language_code TEXT,
    active_slot INTEGER,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE dialogs (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    slot INTEGER NOT NULL,
    persona_id TEXT NOT NULL,
    story_id TEXT,
    created_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    closed_at BIGINT
);
-- At most one open dialog per slot.
CREATE UNIQUE INDEX dialogs_open_slot ON dialogs (user_id, slot) WHERE closed_at IS NULL;

CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    dialog_id BIGINT NOT NULL REFERENCES dialogs (id),
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    status TEXT NOT NULL,
    telegram_message_id BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_by_dialog ON messages (dialog_id, id);

CREATE TABLE processed_updates (
    update_id BIGINT PRIMARY KEY NOT NULL,
    processed_at BIGINT NOT NULL
);
