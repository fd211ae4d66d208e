-- Each credit to an account, once per (account, Idempotency-Key): an admin
-- who retries a funding after a timeout gets the first answer back, not a
-- second credit.
CREATE TABLE fundings (
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    idempotency_key TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    created_ns      BIGINT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
