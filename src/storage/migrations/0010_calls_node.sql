-- Which FreeSWITCH node a call is on (the `name` of its `[[freeswitch.nodes]]` entry): its
-- recording is read from that node's recordings directory. NULL on calls from before this
-- migration, and for the single `[freeswitch]` section: the first node.
ALTER TABLE calls ADD COLUMN node TEXT;
