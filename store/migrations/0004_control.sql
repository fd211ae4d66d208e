-- The control plane's config document (DESIGN.md §3): one row, seeded
-- with the default ('{}', the zero document at version 0) so that the
-- first change locks a row like every later one. Every change adds a
-- row to control_changes in the same transaction: who, when, why, and
-- the document before and after.
CREATE TABLE control_config (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    BIGINT NOT NULL,
    doc        TEXT NOT NULL, -- JSON: fields are added without a migration
    updated_ns BIGINT NOT NULL
);
INSERT INTO control_config (id, version, doc, updated_ns) VALUES (1, 0, '{}', 0);

CREATE TABLE control_changes (
    version    BIGINT PRIMARY KEY, -- the version the change made
    at_ns      BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    before_doc TEXT NOT NULL, -- JSON of the document it replaced
    after_doc  TEXT NOT NULL  -- JSON of the document it stored
);
