-- One row that /readyz rewrites: proof that the database takes writes now (a full disk, a
-- read-only file or a lock held too long fail it), not only that it answers a SELECT.
CREATE TABLE health (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at  BIGINT NOT NULL
);
