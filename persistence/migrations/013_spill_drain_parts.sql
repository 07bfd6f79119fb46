-- The spill drainer stores a queued batch shard by shard (actors/ports.ts, SpilledBatchStore): a
-- shard's rows only by the holder of its lease, so after a failover the parts of one batch may be
-- stored by different owners, at different times.
--
-- vote_batches.shards_to_drain: for a batch claimed by the drainer ('drained'), the parts not yet
-- stored; 0 once every part is (and for every row before this migration). wasCommitted answers
-- nothing for a batch with parts left: it stays in doubt until they are stored.
ALTER TABLE vote_batches
  ADD COLUMN shards_to_drain integer NOT NULL DEFAULT 0 CHECK (shards_to_drain >= 0);

-- One row per stored part: which shard's rows of which batch, by which node, under which lease epoch.
CREATE TABLE spill_drained_shards (
  batch_id    bigint      NOT NULL REFERENCES vote_batches (batch_id),
  election_id uuid        NOT NULL,
  shard       integer     NOT NULL,
  epoch       bigint      NOT NULL,
  node_id     text        NOT NULL,
  row_count   integer     NOT NULL,
  drained_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (batch_id, election_id, shard)
);
