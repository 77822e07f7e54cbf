-- Long-term memory: facts about each user (scoped to a persona, or the whole user when
-- persona_id is NULL), with their unit embedding as little-endian f32 bytes. A fact a newer
-- one contradicts is kept as history (superseded_by, invalidated_at) and never recalled.
CREATE TABLE memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id BIGINT NOT NULL,
    persona_id TEXT,
    dialog_id BIGINT,
    text TEXT NOT NULL,
    category TEXT NOT NULL,
    importance INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    content_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT NOT NULL,
    superseded_by BIGINT,
    invalidated_at BIGINT
);
CREATE INDEX memories_by_user ON memories (user_id, id);

-- The summary standing in for a dialog's earlier part in prompts (one per dialog, updated
-- incrementally).
CREATE TABLE dialog_summaries (
    dialog_id BIGINT PRIMARY KEY NOT NULL,
    through_message_id BIGINT NOT NULL,
    text TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Facts were extracted from each dialog's messages up to this one. Dialogs from before
-- memory start from their newest message: their history is not sent for extraction all at
-- once on the first event after the upgrade.
ALTER TABLE dialogs ADD COLUMN extracted_through BIGINT NOT NULL DEFAULT 0;
UPDATE dialogs SET extracted_through = COALESCE(
    (SELECT MAX(messages.id) FROM messages WHERE messages.dialog_id = dialogs.id), 0);

-- When /forget_me deleted a user's recent replies: their times only (no content, kept two
-- days), so the daily limit still counts them.
CREATE TABLE forgotten_replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX forgotten_replies_by_user ON forgotten_replies (user_id, created_at);
