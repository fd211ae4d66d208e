-- Every instance's heartbeat (DESIGN.md §3): its id, when it was last
-- seen, and the rest as a JSON document (address, applied config
-- version, overrides, dependency health), so fields are added without a
-- migration. Rows of instances not seen for an hour are deleted by the
-- heartbeats of the others.
CREATE TABLE control_instances (
    id      TEXT PRIMARY KEY,
    seen_ns BIGINT NOT NULL,
    doc     TEXT NOT NULL
);
