-- Proactive messages. A job is unique by its idempotency key (kind, user and period), so a
-- restart or a repeated event never schedules it twice; the scheduler takes due pending jobs
-- (running, one more attempt) and records what became of them.
CREATE TABLE scheduled_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    -- pending, running, done, skipped, failed, paused
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX scheduled_jobs_due ON scheduled_jobs (status, due_at);
CREATE INDEX scheduled_jobs_by_user ON scheduled_jobs (user_id);

-- What each user chose in /settings and /timezone (no row: the defaults).
CREATE TABLE notification_settings (
    user_id BIGINT PRIMARY KEY NOT NULL,
    -- Topics switched off, comma-separated.
    disabled_topics TEXT NOT NULL DEFAULT '',
    quiet_start INTEGER,
    quiet_end INTEGER,
    time_zone TEXT,
    updated_at BIGINT NOT NULL
);

-- Set when Telegram answered 403 (the user blocked the bot or deleted their account);
-- cleared when they write again.
ALTER TABLE users ADD COLUMN blocked_at BIGINT;

-- Operators' broadcasts: one delivery per recipient, chosen when the broadcast was created.
CREATE TABLE broadcasts (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    text TEXT NOT NULL,
    -- The segment as JSON.
    segment TEXT NOT NULL,
    -- running, done
    status TEXT NOT NULL,
    total BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE TABLE broadcast_deliveries (
    broadcast_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    -- pending, sending, sent, skipped, failed, unconfirmed (sending when a process died:
    -- never sent again)
    status TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (broadcast_id, user_id)
);
CREATE INDEX broadcast_deliveries_due ON broadcast_deliveries (status, due_at);
