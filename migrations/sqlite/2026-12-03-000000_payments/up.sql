-- Payments (Telegram Stars). Each user's entitlement is one row, changed only inside a
-- transaction that also writes its audit line; a payment is recorded once per Telegram
-- charge (the primary key, not a check before an insert).
CREATE TABLE entitlements (
    user_id BIGINT PRIMARY KEY NOT NULL,
    -- The plan: its catalogue product and the end of its paid period (Unix ms).
    plan_product TEXT,
    paid_until BIGINT,
    renewing BOOLEAN NOT NULL DEFAULT FALSE,
    -- The subscription's first charge (what editUserStarSubscription names).
    subscription_charge TEXT,
    -- Unlocked features, comma-separated.
    unlocked TEXT NOT NULL DEFAULT '',
    -- The plan state the sweep last recorded: none, active, grace, expired.
    plan_state TEXT NOT NULL DEFAULT 'none',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);
CREATE INDEX entitlements_paid_until ON entitlements (paid_until) WHERE paid_until IS NOT NULL;

CREATE TABLE payments (
    charge_id TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL,
    product_id TEXT NOT NULL,
    stars INTEGER NOT NULL,
    -- one_off, subscription, renewal
    kind TEXT NOT NULL,
    days_granted INTEGER NOT NULL,
    -- paid, unmatched (money for nothing vitte sells: an operator refunds it), refunded
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    refunded_at BIGINT
);
CREATE INDEX payments_by_user ON payments (user_id);

-- Pre-checkout queries and the answer given.
CREATE TABLE checkouts (
    query_id TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    accepted BOOLEAN NOT NULL,
    refusal TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX checkouts_by_user ON checkouts (user_id, payload);

-- Every transition, with its time and source (telegram, user, operator, timer).
CREATE TABLE payment_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id BIGINT NOT NULL,
    charge_id TEXT,
    event TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX payment_events_by_user ON payment_events (user_id, id);

-- Today's replies are counted from the messages (role, provider, created_at) on activation.
CREATE INDEX messages_by_dialog_time ON messages (dialog_id, created_at);
