-- The console lists webhooks delivered in the last hour: by delivery time, without reading
-- every delivered row ever kept. `state` leads so SQLite prefers it to `outbox_due` for
-- `state = 'delivered' AND delivered_at >= ?` (checked by a test of the plan).
CREATE INDEX outbox_delivered_at ON outbox (state, delivered_at) WHERE state = 'delivered';
