-- The Telegram messages a long reply was split over, besides the last one
-- (telegram_message_id): comma-separated ids, for "Regenerate" to rewrite the whole reply.
ALTER TABLE messages ADD COLUMN telegram_part_ids TEXT;
