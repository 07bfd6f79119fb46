-- Votes, the batches that stored them, shard leases (epoch fencing) and shard snapshots.
--
-- No foreign keys from these tables to elections: a foreign key is a per-row lookup and lock in
-- the hot path (tens of thousands of rows a second), and it adds nothing here: the journal only
-- writes rows whose (election, shard) holds a lease row, and leases are taken for elections the
-- node loaded from the elections table.

-- One row per counted vote. The primary key is invariant 1's last line of defence: whatever the
-- retries, redeliveries, failovers and handoffs, a second row for a voter cannot be stored.
CREATE TABLE votes (
  election_id     uuid        NOT NULL,
  voter_number    bigint      NOT NULL CHECK (voter_number >= 0),
  candidate_index smallint    NOT NULL CHECK (candidate_index BETWEEN 0 AND 63),
  shard           integer     NOT NULL CHECK (shard BETWEEN 0 AND 1023),
  -- The lease epoch the vote was admitted under; checked against shard_leases in the same
  -- transaction (invariant 4), kept for the audit.
  epoch           bigint      NOT NULL CHECK (epoch >= 1),
  batch_id        bigint      NOT NULL,
  vote_id         uuid        NOT NULL,
  accepted_at     timestamptz NOT NULL,
  PRIMARY KEY (election_id, voter_number)
);

-- Recovery reads "votes of (election, shard) with batch_id > watermark". Batch ids only grow, so
-- new entries land at the right edge of each (election, shard) range: cheap to maintain.
CREATE INDEX votes_recovery ON votes (election_id, shard, batch_id);

-- Every committed batch, written in the same transaction as its rows: a batch id is here if and
-- only if its rows are stored, which makes Journal.wasCommitted exact. The audit hash chain will
-- hang off this table.
CREATE TABLE vote_batches (
  batch_id       bigint      PRIMARY KEY,
  -- Rows this batch stored (conflicts excluded: they were already stored by an earlier batch).
  row_count      integer     NOT NULL CHECK (row_count >= 0),
  conflict_count integer     NOT NULL DEFAULT 0 CHECK (conflict_count >= 0),
  committed_at   timestamptz NOT NULL DEFAULT now(),
  node_id        text        NOT NULL
);

-- Who may write a shard, and under which epoch. The epoch grows by one on every acquisition, so
-- a writer holding an older epoch (another node, or an earlier process of this one) is refused
-- from the moment the new owner acquires. Rows are never deleted: a deleted row would restart
-- its epoch at 1 and could let a stale writer through again.
CREATE TABLE shard_leases (
  election_id  uuid        NOT NULL,
  shard        integer     NOT NULL CHECK (shard BETWEEN 0 AND 1023),
  epoch        bigint      NOT NULL CHECK (epoch >= 1),
  owner_node   text        NOT NULL,
  acquired_at  timestamptz NOT NULL DEFAULT now(),
  renewed_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  PRIMARY KEY (election_id, shard)
);

-- The latest snapshot of each shard only. Recovery needs just the latest, and a shard's bitmap
-- is megabytes (4.7 MB per shard of a 300M-voter election): history would multiply that by its
-- length for no reader. A snapshot replaces the stored one only when it is not older (higher
-- epoch, or same epoch and watermark not lower), and only under the current lease epoch.
CREATE TABLE shard_snapshots (
  election_id        uuid        NOT NULL,
  shard              integer     NOT NULL CHECK (shard BETWEEN 0 AND 1023),
  epoch              bigint      NOT NULL CHECK (epoch >= 1),
  watermark_batch_id bigint      NOT NULL,
  voter_slots        bigint      NOT NULL CHECK (voter_slots >= 0),
  tallies            bigint[]    NOT NULL,
  bitmap             bytea       NOT NULL,
  taken_at           timestamptz NOT NULL,
  PRIMARY KEY (election_id, shard),
  CHECK (octet_length(bitmap) * 8 >= voter_slots)
);

-- Batch ids are handed out in blocks of 1000: one nextval reserves [value, value + 999] for one
-- process, so batch ids need one round trip per thousand batches, stay unique across processes,
-- and a later reservation is always above every id of an earlier one.
CREATE SEQUENCE vote_batch_seq AS bigint START WITH 1 INCREMENT BY 1000 MINVALUE 1;
