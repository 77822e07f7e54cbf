-- Crash safety. An update is stored (the inbox) before Telegram is told it arrived, with its
-- raw JSON while it waits to be handled, so a crash loses nothing accepted. A user message
-- knows which update brought it (a redelivery is never stored twice), whether its reply is
-- still being written (status 'pending'), and which Telegram message shows that reply.
ALTER TABLE processed_updates RENAME TO inbox;
ALTER TABLE inbox RENAME COLUMN processed_at TO received_at;
ALTER TABLE inbox ADD COLUMN user_id BIGINT;
-- The raw update while it waits to be handled; NULL once handled.
ALTER TABLE inbox ADD COLUMN payload TEXT;
CREATE INDEX inbox_pending ON inbox (update_id) WHERE payload IS NOT NULL;

ALTER TABLE messages ADD COLUMN update_id BIGINT;
CREATE UNIQUE INDEX messages_by_update ON messages (update_id);
ALTER TABLE messages ADD COLUMN reply_message_id BIGINT;
CREATE INDEX messages_pending ON messages (dialog_id) WHERE status IN ('pending', 'delivering');

-- The write probe of the readiness check.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY NOT NULL,
    probed_at BIGINT NOT NULL
);
