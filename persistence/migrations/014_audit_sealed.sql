-- The audit chain, sealed after the commit (persistence/auditSealer.ts) instead of inside it.
--
-- Appending inside the commit made every commit of a shard wait on the shard's chain head for the
-- one before it, and paid a record (a head row version, a record row, their WAL) per shard and
-- commit: ~9-12 µs of Postgres CPU per vote (bench/README.md, "Ninth look"). Now the commit only
-- computes, in the same statement as the votes, each (election, shard, epoch) part's rows digest
-- (the v1 digest: rows sorted by voter_number) and keeps it in the batch's own row below. A
-- sealer on every node, about once a second, takes the pending batches (FOR UPDATE SKIP LOCKED)
-- and appends one record per (election, shard, epoch) for all of them, then clears them here.
--
-- A pending part: vote_batches.audit_* non-NULL, five arrays of one length, one element a part.
ALTER TABLE vote_batches
  ADD COLUMN audit_election_ids uuid[],
  ADD COLUMN audit_shards       integer[],
  ADD COLUMN audit_epochs       bigint[],
  ADD COLUMN audit_row_counts   integer[],
  ADD COLUMN audit_digests      bytea[];
CREATE INDEX vote_batches_audit_pending ON vote_batches (batch_id) WHERE audit_shards IS NOT NULL;

-- A v2 record seals several batches of one shard and epoch: batch_ids, ascending (batch_id is
-- the last of them). Its rows_digest is SHA-256 over the batches' v1 digests in that order, and
-- its hash is SHA-256(prev_hash ‖ 'livevote-audit-v2|election|shard|seq|b1,b2,…|epoch|rows|recorded_at_us'
-- ‖ rows_digest). NULL: a v1 record of batch_id alone (every record before this migration).
ALTER TABLE audit_records ADD COLUMN batch_ids bigint[];
ALTER TABLE audit_chain_heads ADD COLUMN batch_ids bigint[];
