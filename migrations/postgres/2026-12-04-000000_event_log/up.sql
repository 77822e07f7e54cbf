-- What operators look back on: registrations, payments, errors and operator actions, each
-- with a severity. Never message texts or secrets. Kept for `log.event_retention`.
CREATE TABLE event_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    -- info, warning, error
    severity TEXT NOT NULL,
    -- registration, payment, error, operator
    kind TEXT NOT NULL,
    user_id BIGINT,
    detail TEXT NOT NULL
);
CREATE INDEX event_log_at ON event_log (at);
