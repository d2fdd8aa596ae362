-- Calls we handed an id for (click2call) or reported (dialer), keyed by the id Finaz knows.
CREATE TABLE calls (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,              -- 'click2call' | 'dialer'
    ramal           TEXT,
    telefone        TEXT,
    crm_id          TEXT,
    state           TEXT NOT NULL,              -- see CallState
    outcome         TEXT,                       -- hangup or failure cause
    recording_path  TEXT,
    recording_state TEXT,                       -- 'recording' | 'done' | 'discarded'
    created_at      BIGINT NOT NULL,            -- unix milliseconds
    answered_at     BIGINT,
    ended_at        BIGINT
);
CREATE INDEX calls_created_at ON calls (created_at);

-- Every channel uuid that belongs to a call (both legs of a bridge), so any of them finds it.
CREATE TABLE call_legs (
    leg_id  TEXT PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls (id)
);
CREATE INDEX call_legs_call_id ON call_legs (call_id);

-- Webhooks to Finaz: written before they are sent, one per call, retried until delivered.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id         TEXT NOT NULL UNIQUE,
    url             TEXT NOT NULL,
    state           TEXT NOT NULL,              -- 'pending' | 'delivered' | 'dead'
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    delivered_at    BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
