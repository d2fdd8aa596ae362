-- Every recording FreeSWITCH reported (RECORD_START / RECORD_STOP), by the channel that
-- recorded it. Kept for legs of calls we do not know yet: a dialer call is reported after
-- its customer leg started recording.
CREATE TABLE recordings (
    leg_id      TEXT NOT NULL,
    path        TEXT NOT NULL,
    state       TEXT NOT NULL,      -- 'recording' | 'done' | 'discarded'
    cause       TEXT,               -- Record-Completion-Cause, or 'hangup'
    started_at  BIGINT,
    stopped_at  BIGINT,
    PRIMARY KEY (leg_id, path)
);
CREATE INDEX recordings_started_at ON recordings (started_at);
