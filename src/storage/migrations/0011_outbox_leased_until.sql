-- Until when an entry is out with a replica (set by the lease, cleared by the attempt's
-- outcome): a replica that starts and makes every pending webhook due at once leaves alone
-- the ones another replica is sending right now. NULL: not out.
ALTER TABLE outbox ADD COLUMN leased_until BIGINT;
