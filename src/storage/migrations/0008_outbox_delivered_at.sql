-- The console lists webhooks delivered in the last hour: by delivery time, without reading
-- every delivered row ever kept.
CREATE INDEX outbox_delivered_at ON outbox (delivered_at) WHERE state = 'delivered';
