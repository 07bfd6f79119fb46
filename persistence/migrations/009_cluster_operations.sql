-- Operator requests on the cluster (issue 13): move a shard, drain a node, balance. Any node (or
-- the CLI) records one; the coordinator carries it out through the shard map and records its
-- progress here.
CREATE TABLE cluster_operations (
  operation_id  bigserial PRIMARY KEY,
  kind          text NOT NULL CHECK (kind IN ('move', 'drain', 'balance')),
  request       jsonb NOT NULL,
  status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
  shards_total  integer NOT NULL DEFAULT 0,
  shards_moved  integer NOT NULL DEFAULT 0,
  requested_at  timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  error         text
);
CREATE INDEX cluster_operations_open ON cluster_operations (operation_id) WHERE status IN ('pending', 'running');

-- A draining node receives no shard, and the coordinator moves its shards away a few at a time.
ALTER TABLE cluster_nodes ADD COLUMN draining boolean NOT NULL DEFAULT false;
-- A shard an operator placed: automatic balancing moves others rather than this one.
ALTER TABLE shard_owners ADD COLUMN pinned boolean NOT NULL DEFAULT false;
