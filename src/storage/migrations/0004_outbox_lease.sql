-- Which lease an entry was last handed out under (random per lease). A failed attempt is
-- applied only by the lease that made it, so a late result of an expired lease cannot
-- overwrite what the newer one decided; 'delivered' is final whoever learnt it.
ALTER TABLE outbox ADD COLUMN lease BIGINT;
