DROP TABLE token_usage;
ALTER TABLE messages DROP COLUMN provider;
