-- The inbox is claimed like the outbox, and a rejected entry is retried
-- (rejected is not seen) until the ledger's bound sends it to the dead
-- letters: each entry counts its deliveries and when it is due again.
ALTER TABLE inbox ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN next_attempt_ns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN last_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX inbox_due ON inbox (next_attempt_ns, id);
ALTER TABLE dead_letters ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
