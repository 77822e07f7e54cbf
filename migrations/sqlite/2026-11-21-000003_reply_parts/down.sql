ALTER TABLE messages DROP COLUMN telegram_part_ids;
