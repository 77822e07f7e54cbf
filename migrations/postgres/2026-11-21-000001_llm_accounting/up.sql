-- Which LLM provider wrote an assistant message, and tokens used per user, slot and day.
ALTER TABLE messages ADD COLUMN provider TEXT;

CREATE TABLE token_usage (
    user_id BIGINT NOT NULL,
    slot INTEGER NOT NULL,
    day BIGINT NOT NULL,                      -- days since 1970-01-01 (UTC)
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    PRIMARY KEY (user_id, slot, day)
);
