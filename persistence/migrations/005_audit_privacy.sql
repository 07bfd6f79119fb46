-- The audit trail (a hash chain per election shard) and the privacy tables (hashed request
-- metadata with a retention period, erasure tombstones). What the formats mean and how they are
-- checked: persistence/audit.ts, persistence/privacy.ts, PRIVACY.md.

-- ---------------------------------------------------------------------------------------------
-- Audit trail
--
-- Every committed vote batch appends, in the same transaction as its votes, one record per
-- (election, shard) it stored rows for:
--   rows_digest = SHA-256 of the stored rows of that batch and shard, sorted by voter_number,
--                 one line each: voter_number|candidate_index|vote_id|accepted_at_ms\n
--   hash        = SHA-256(prev_hash ‖ 'livevote-audit-v1|election|shard|seq|batch|epoch|rows|recorded_at_us' ‖ rows_digest)
-- prev_hash is the previous record's hash (32 zero bytes for seq 1). `livevote audit verify`
-- recomputes all of it in TypeScript from the stored votes, trusting none of the SQL below.

-- The latest record of each chain: the row every commit that extends the chain upserts, so its
-- row lock is what serialises two commits of one shard (the second waits for the first to
-- commit, then links to its hash). Kept equal to the last record of audit_records; verify checks.
CREATE TABLE audit_chain_heads (
  election_id  uuid        NOT NULL,
  shard        integer     NOT NULL CHECK (shard BETWEEN 0 AND 1023),
  seq          bigint      NOT NULL CHECK (seq >= 1),
  batch_id     bigint      NOT NULL,
  epoch        bigint      NOT NULL CHECK (epoch >= 1),
  row_count    integer     NOT NULL CHECK (row_count >= 1),
  rows_digest  bytea       NOT NULL CHECK (octet_length(rows_digest) = 32),
  prev_hash    bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
  hash         bytea       NOT NULL CHECK (octet_length(hash) = 32),
  recorded_at  timestamptz NOT NULL,
  PRIMARY KEY (election_id, shard)
);

CREATE TABLE audit_records (
  election_id  uuid        NOT NULL,
  shard        integer     NOT NULL CHECK (shard BETWEEN 0 AND 1023),
  seq          bigint      NOT NULL CHECK (seq >= 1),
  batch_id     bigint      NOT NULL,
  epoch        bigint      NOT NULL CHECK (epoch >= 1),
  row_count    integer     NOT NULL CHECK (row_count >= 1),
  rows_digest  bytea       NOT NULL CHECK (octet_length(rows_digest) = 32),
  prev_hash    bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
  hash         bytea       NOT NULL CHECK (octet_length(hash) = 32),
  recorded_at  timestamptz NOT NULL,
  PRIMARY KEY (election_id, shard, seq)
);

CREATE FUNCTION livevote_audit_hash(
  prev_hash bytea, election_id uuid, shard integer, seq bigint, batch_id bigint, epoch bigint,
  row_count integer, rows_digest bytea, recorded_at timestamptz
) RETURNS bytea LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
  SELECT sha256(prev_hash
    || convert_to(concat_ws('|', 'livevote-audit-v1', election_id, shard, seq, batch_id, epoch, row_count,
                            (extract(epoch FROM recorded_at) * 1000000)::bigint), 'UTF8')
    || rows_digest)
$$;

-- Append-only, for every role: the service runs as a superuser in embedded mode, so privileges
-- alone would not hold. (A superuser can still disable triggers; the chain is what makes that
-- visible, and published head hashes are what make rewriting the whole chain visible.)
CREATE FUNCTION livevote_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'livevote audit: % on % is refused; audit records are append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;

-- A head may only move forward by one record that links to it.
CREATE FUNCTION livevote_audit_head_advance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.election_id = OLD.election_id AND NEW.shard = OLD.shard
     AND NEW.seq = OLD.seq + 1 AND NEW.prev_hash = OLD.hash THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'livevote audit: the chain head of (%, %) may only advance by one linked record', OLD.election_id, OLD.shard
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_records
  FOR EACH STATEMENT EXECUTE FUNCTION livevote_audit_refuse();
CREATE TRIGGER audit_chain_heads_no_removal BEFORE DELETE OR TRUNCATE ON audit_chain_heads
  FOR EACH STATEMENT EXECUTE FUNCTION livevote_audit_refuse();
CREATE TRIGGER audit_chain_heads_advance BEFORE UPDATE ON audit_chain_heads
  FOR EACH ROW EXECUTE FUNCTION livevote_audit_head_advance();

REVOKE ALL ON audit_records, audit_chain_heads FROM PUBLIC;
REVOKE ALL ON FUNCTION livevote_audit_refuse(), livevote_audit_head_advance() FROM PUBLIC;

-- Votes stored before this migration existed are chained now, batch by batch in batch order, so
-- verify covers every stored vote; their records carry the migration's time.
DO $$
DECLARE
  g record;
BEGIN
  FOR g IN
    SELECT election_id, shard, batch_id, epoch, count(*)::integer AS row_count,
           sha256(convert_to(string_agg(
             voter_number::text || '|' || candidate_index::text || '|' || vote_id::text || '|'
               || ((extract(epoch FROM accepted_at) * 1000)::bigint)::text || E'\n',
             '' ORDER BY voter_number), 'UTF8')) AS rows_digest
      FROM votes
     GROUP BY election_id, shard, batch_id, epoch
     ORDER BY election_id, shard, batch_id, epoch
  LOOP
    WITH head AS (
      INSERT INTO audit_chain_heads AS h (election_id, shard, seq, batch_id, epoch, row_count, rows_digest, prev_hash, hash, recorded_at)
      VALUES (g.election_id, g.shard, 1, g.batch_id, g.epoch, g.row_count, g.rows_digest, decode(repeat('00', 32), 'hex'),
              livevote_audit_hash(decode(repeat('00', 32), 'hex'), g.election_id, g.shard, 1, g.batch_id, g.epoch, g.row_count, g.rows_digest, now()),
              now())
      ON CONFLICT (election_id, shard) DO UPDATE SET
        seq = h.seq + 1, batch_id = excluded.batch_id, epoch = excluded.epoch, row_count = excluded.row_count,
        rows_digest = excluded.rows_digest, prev_hash = h.hash, recorded_at = excluded.recorded_at,
        hash = livevote_audit_hash(h.hash, h.election_id, h.shard, h.seq + 1, excluded.batch_id, excluded.epoch,
                                   excluded.row_count, excluded.rows_digest, excluded.recorded_at)
      RETURNING h.*)
    INSERT INTO audit_records (election_id, shard, seq, batch_id, epoch, row_count, rows_digest, prev_hash, hash, recorded_at)
    SELECT election_id, shard, seq, batch_id, epoch, row_count, rows_digest, prev_hash, hash, recorded_at FROM head;
  END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Privacy
--
-- Request metadata, kept for abuse investigation only, for LIVEVOTE_METADATA_RETENTION_DAYS
-- (default 30), then purged. No IP address is stored: ip_hash and network_hash are the first 16
-- bytes of HMAC-SHA256(ipHashKey, ...) of the address and of its /24 or /64 network; the user
-- agent is reduced to a coarse family ('chrome/android'); times are whole seconds.
-- No foreign keys: rows are written in bulk (COPY) off the vote path, and an erasure deletes them.

-- One row per accepted vote, keyed by the voter's pseudonym (voter_number), never the user id.
CREATE TABLE vote_metadata (
  election_id   uuid        NOT NULL,
  voter_number  bigint      NOT NULL CHECK (voter_number >= 0),
  ip_hash       bytea       NOT NULL CHECK (octet_length(ip_hash) = 16),
  network_hash  bytea       NOT NULL CHECK (octet_length(network_hash) = 16),
  ua_family     text        NOT NULL CHECK (length(ua_family) BETWEEN 1 AND 40),
  recorded_at   timestamptz NOT NULL
);
-- Export and erasure find a voter's rows; the purge deletes by age (rows arrive in time order,
-- so a BRIN index is a few pages and costs nothing per insert).
CREATE INDEX vote_metadata_voter ON vote_metadata (voter_number);
CREATE INDEX vote_metadata_recorded_at ON vote_metadata USING brin (recorded_at);

-- Registrations and logins.
CREATE TABLE account_metadata (
  user_id       uuid        NOT NULL,
  event         text        NOT NULL CHECK (event IN ('register', 'login')),
  ip_hash       bytea       NOT NULL CHECK (octet_length(ip_hash) = 16),
  network_hash  bytea       NOT NULL CHECK (octet_length(network_hash) = 16),
  ua_family     text        NOT NULL CHECK (length(ua_family) BETWEEN 1 AND 40),
  recorded_at   timestamptz NOT NULL
);
CREATE INDEX account_metadata_user ON account_metadata (user_id);
CREATE INDEX account_metadata_recorded_at ON account_metadata (recorded_at);

-- One row per erased account: that an erasure happened and when, nothing about the person. The
-- user id is a random identifier that, once the users row is gone, leads to no data; it is kept
-- so a repeated request is answered "already erased" and the erasure can be shown to have
-- happened. No voter number: the link between the account and its vote is what erasure removes.
CREATE TABLE erased_accounts (
  user_id       uuid        PRIMARY KEY,
  erased_at     timestamptz NOT NULL DEFAULT now(),
  requested_by  text        NOT NULL CHECK (requested_by IN ('self', 'admin'))
);
