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

-- Facts were extracted from each dialog's messages up to this one.
ALTER TABLE dialogs ADD COLUMN extracted_through BIGINT NOT NULL DEFAULT 0;
