-- Exceptions (outlast.Exception): disagreements with a bank that a human
-- must resolve, with their evidence. fact_key makes filing the same fact
-- twice (webhook, reconciler, discrepancy report) file it once.
CREATE TABLE exceptions (
    id          {{serial}},
    fact_key    TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    payout_id   TEXT NOT NULL,
    account_id  TEXT NOT NULL DEFAULT '', -- '' for a payout Outlast does not know
    channel     TEXT NOT NULL,
    currency    TEXT NOT NULL DEFAULT '',
    claim       BIGINT NOT NULL,
    held        BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    summary     TEXT NOT NULL,
    evidence    TEXT NOT NULL,           -- JSON array of outlast.Evidence
    filed_by    TEXT NOT NULL,
    opened_ns   BIGINT NOT NULL,
    resolved_ns BIGINT NOT NULL DEFAULT 0, -- 0 while open
    resolution  TEXT NOT NULL DEFAULT ''   -- JSON outlast.Resolution once resolved
);
CREATE INDEX exceptions_account_open ON exceptions (account_id, resolved_ns);
CREATE INDEX exceptions_payout ON exceptions (payout_id);

-- The journal rows an exception's filing (a hold) and resolution wrote
-- name it; every other row has NULL.
ALTER TABLE journal ADD COLUMN exception_key TEXT;

-- The exception a conflicting report filed; '' for conflicts recorded
-- before exceptions existed, which the audit keeps listing.
ALTER TABLE conflicts ADD COLUMN exception_key TEXT NOT NULL DEFAULT '';
