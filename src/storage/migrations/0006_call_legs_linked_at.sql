-- When a leg was linked to its call. An operator's leg can serve several customers in turn
-- (mod_callcenter persistent agents, uuid-standby): it is then re-linked to each new call,
-- and a call only claims that leg's recordings still running or stopped after it joined.
-- NULL on rows written before this migration: linked for the whole call.
ALTER TABLE call_legs ADD COLUMN linked_at BIGINT;
