-- What is still open, found without scanning every call or recording ever kept: the
-- reconciliation after a gap in events walks only these.
CREATE INDEX recordings_open ON recordings (leg_id) WHERE state = 'recording';
CREATE INDEX calls_open ON calls (created_at) WHERE ended_at IS NULL;
-- storage.retention prunes finished webhooks by age.
CREATE INDEX outbox_finished ON outbox (created_at) WHERE state IN ('delivered', 'dead');
