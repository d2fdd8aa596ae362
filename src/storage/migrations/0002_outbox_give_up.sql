-- When an undelivered webhook stops being retried (created_at + finaz.max_retry_age, or a
-- manual retry's time + max_retry_age). NULL on rows written before this migration: the
-- deliverer then uses created_at + max_retry_age.
ALTER TABLE outbox ADD COLUMN give_up_at BIGINT;
