-- What is still open, found without scanning every call or recording ever kept: the
-- reconciliation after a gap in events walks only these.
CREATE INDEX recordings_open ON recordings (leg_id) WHERE state = 'recording';
CREATE INDEX calls_open ON calls (created_at) WHERE ended_at IS NULL;
