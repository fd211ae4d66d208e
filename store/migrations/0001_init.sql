-- The ledger. One dialect-neutral schema: {{serial}} is the only
-- substitution (an auto-increment integer primary key). Times are BIGINT
-- unix nanoseconds UTC (columns end in _ns) so both backends keep
-- sub-second precision and compare times the same way.

CREATE TABLE clients (
    id         TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE, -- hex SHA-256 of the API key
    created_ns BIGINT NOT NULL
);

CREATE TABLE accounts (
    id               TEXT PRIMARY KEY,
    client_id        TEXT NOT NULL REFERENCES clients (id),
    currency         TEXT NOT NULL,
    funded           BIGINT NOT NULL DEFAULT 0 CHECK (funded >= 0),
    available        BIGINT NOT NULL DEFAULT 0 CHECK (available >= 0),
    held             BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    paid_out         BIGINT NOT NULL DEFAULT 0 CHECK (paid_out >= 0),
    payouts_disabled INTEGER NOT NULL DEFAULT 0,
    daily_limit      BIGINT NOT NULL DEFAULT 0,
    version          BIGINT NOT NULL,
    created_ns       BIGINT NOT NULL,
    updated_ns       BIGINT NOT NULL
);
CREATE INDEX accounts_client ON accounts (client_id);

CREATE TABLE payouts (
    id              TEXT PRIMARY KEY, -- UUIDv7: id order is creation order
    client_id       TEXT NOT NULL REFERENCES clients (id),
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    destination     TEXT NOT NULL,
    status          TEXT NOT NULL,
    channel         TEXT NOT NULL DEFAULT '',
    partner_ref     TEXT NOT NULL DEFAULT '',
    failure_reason  TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    version         BIGINT NOT NULL,
    created_ns      BIGINT NOT NULL,
    updated_ns      BIGINT NOT NULL,
    UNIQUE (client_id, idempotency_key)
);
CREATE INDEX payouts_client_id ON payouts (client_id, id);
CREATE INDEX payouts_account_id ON payouts (account_id, id);
CREATE INDEX payouts_account_created ON payouts (account_id, created_ns);

CREATE TABLE journal (
    id         {{serial}},
    account_id TEXT NOT NULL REFERENCES accounts (id),
    payout_id  TEXT REFERENCES payouts (id), -- NULL for funding
    bucket     TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    created_ns BIGINT NOT NULL
);
CREATE INDEX journal_account ON journal (account_id, id);
CREATE INDEX journal_payout ON journal (payout_id);

CREATE TABLE outbox (
    payout_id       TEXT PRIMARY KEY REFERENCES payouts (id),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns BIGINT NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',
    created_ns      BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_ns);

-- Every notification seen, by (channel, event_id): the deduplication key
-- and, with its outcome, the audit trail of what partners reported.
CREATE TABLE notifications (
    channel        TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    payout_id      TEXT NOT NULL,
    partner_ref    TEXT NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT NOT NULL,
    occurred_ns    BIGINT NOT NULL,
    received_ns    BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    outcome_reason TEXT NOT NULL,
    applied_ns     BIGINT NOT NULL,
    PRIMARY KEY (channel, event_id)
);
CREATE INDEX notifications_payout ON notifications (payout_id);

-- Reports that contradicted a terminal state; the audit lists each one.
CREATE TABLE conflicts (
    id              {{serial}},
    payout_id       TEXT NOT NULL,
    channel         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    payout_status   TEXT NOT NULL,
    reported_status TEXT NOT NULL,
    created_ns      BIGINT NOT NULL
);

-- The database fallback for the notification log.
CREATE TABLE inbox (
    id          {{serial}},
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    payout_id   TEXT NOT NULL,
    partner_ref TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    occurred_ns BIGINT NOT NULL,
    received_ns BIGINT NOT NULL,
    created_ns  BIGINT NOT NULL
);

CREATE TABLE dead_letters (
    id          {{serial}},
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    payout_id   TEXT NOT NULL,
    partner_ref TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    occurred_ns BIGINT NOT NULL,
    received_ns BIGINT NOT NULL,
    dead_reason TEXT NOT NULL,
    created_ns  BIGINT NOT NULL
);
