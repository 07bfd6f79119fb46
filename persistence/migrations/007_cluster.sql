-- The cluster (cluster/): members, the coordinator lease and the shard map, all in Postgres, as
-- Orleans' SQL membership table and Temporal's shard table keep theirs. Times are the database's
-- clock: one clock for every node.

-- One row per node id. A restart of the same id bumps `incarnation`: the old process, if it still
-- runs, finds its heartbeat refused and stops serving.
CREATE TABLE cluster_nodes (
  node_id             text PRIMARY KEY CHECK (node_id ~ '^[a-z0-9-]{1,40}$'),
  az                  text NOT NULL CHECK (length(az) BETWEEN 1 AND 100),
  url                 text NOT NULL CHECK (length(url) BETWEEN 1 AND 300),
  status              text NOT NULL CHECK (status IN ('alive', 'dead', 'left')),
  incarnation         bigint NOT NULL,
  started_at          timestamptz NOT NULL DEFAULT now(),
  heartbeat_at        timestamptz NOT NULL DEFAULT now(),
  secrets_fingerprint text NOT NULL
);

-- The single row of cluster-wide state. `version` orders every change of membership or of the
-- shard map; `elections_version` every change of an election (a trigger bumps it, so a node
-- learns of elections created on any other node by comparing one number).
CREATE TABLE cluster_state (
  id                     integer PRIMARY KEY CHECK (id = 1),
  version                bigint NOT NULL DEFAULT 1,
  elections_version      bigint NOT NULL DEFAULT 1,
  coordinator_node       text,
  coordinator_expires_at timestamptz,
  secrets_fingerprint    text
);
INSERT INTO cluster_state (id) VALUES (1);

-- The shard map: who should own each (election, shard). Fencing is still shard_leases' epoch:
-- the owner named here takes the lease, and the lease is what the journal checks.
CREATE TABLE shard_owners (
  election_id  uuid NOT NULL REFERENCES elections (election_id) ON DELETE CASCADE,
  shard        integer NOT NULL CHECK (shard BETWEEN 0 AND 1023),
  owner_node   text NOT NULL,
  map_version  bigint NOT NULL,
  PRIMARY KEY (election_id, shard)
);

CREATE FUNCTION cluster_bump_elections_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE cluster_state SET elections_version = elections_version + 1 WHERE id = 1;
  RETURN NULL;
END $$;

CREATE TRIGGER elections_changed AFTER INSERT OR UPDATE OR DELETE ON elections
  FOR EACH STATEMENT EXECUTE FUNCTION cluster_bump_elections_version();
