-- livevote_audit_hash, the same body without STRICT, so Postgres inlines it into the commit
-- statement instead of running a SQL-function call per chain record (two per shard and commit:
-- the upsert computes the insert's hash and the update's). Postgres inlines a scalar SQL function
-- declared STRICT only when its body is strict too, and concat_ws is not. Every caller passes
-- NOT NULL columns, so the results are the same; bench/journalFeatures.ts measured the commit at
-- 32-row batches over 8 shards at 44-54 µs of Postgres CPU per vote against 61-66 before.
CREATE OR REPLACE FUNCTION livevote_audit_hash(
  prev_hash bytea, election_id uuid, shard integer, seq bigint, batch_id bigint, epoch bigint,
  row_count integer, rows_digest bytea, recorded_at timestamptz
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT sha256(prev_hash
    || convert_to(concat_ws('|', 'livevote-audit-v1', election_id, shard, seq, batch_id, epoch, row_count,
                            (extract(epoch FROM recorded_at) * 1000000)::bigint), 'UTF8')
    || rows_digest)
$$;
