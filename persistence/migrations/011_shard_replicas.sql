-- Warm replicas (issue 12): the nodes that follow each shard's committed votes from its owner's
-- stream, in other AZs than the owner's. The coordinator places them (cluster/allocation.ts
-- placeReplicas) and promotes one when the owner dies. Empty: no replica (LIVEVOTE_REPLICAS=0,
-- or no other live node).
ALTER TABLE shard_owners ADD COLUMN replica_nodes text[] NOT NULL DEFAULT '{}';
