-- Click2call attempts by their double-click key ('pair:RAMAL:TELEFONE', 'key:IDEMPOTENCY-KEY'),
-- shared by every replica on one database: a repeated click within its window joins the
-- first attempt whichever replica took it, and an Idempotency-Key outlives a restart.
-- `owner` names the attempt (random); rows of one attempt share it and its outcome.
CREATE TABLE click2call_claims (
    claim_key   TEXT PRIMARY KEY,
    ramal       TEXT NOT NULL,
    telefone    TEXT NOT NULL,
    owner       BIGINT NOT NULL,
    call_id     TEXT,               -- set once the operator's phone rings
    answered    BIGINT,             -- 1 when the operator had picked up already
    failure     TEXT,               -- set once the attempt failed (click2call's own code)
    expires_at  BIGINT NOT NULL
);
CREATE INDEX click2call_claims_owner ON click2call_claims (owner);
CREATE INDEX click2call_claims_expires_at ON click2call_claims (expires_at);
