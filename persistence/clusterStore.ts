// SQL for the cluster (migration 007): members, the coordinator lease, the shard map. The rules
// (when a node is dead, who owns what) live in cluster/; this file states them in SQL, each
// change in one short transaction, every statement bounded on both sides: Postgres ends it
// (statement, lock and idle-in-transaction timeouts) and the client gives up on it
// (query_timeout), so a frozen database or a paused peer holding a row lock never freezes a
// heartbeat or a failover.
import type pg from 'pg';
import { withClient, type Pool, type PoolClient } from './db.ts';
import {
  ClusterOperationRefused,
  SecretsMismatchError,
  type ClusterOperation,
  type ClusterOperationRequest,
  type ClusterStore,
  type ClusterView,
  type HeartbeatResult,
  type JoinRequest,
  type MemberRecord,
  type ShardAssignment,
  type ShardOwnerRecord,
} from '../cluster/ports.ts';

/** A cluster statement that takes longer than this failed; the caller retries at its next tick. */
export const clusterStatementTimeoutMsDefault = 1_000;

export interface PgClusterStoreOptions {
  readonly statementTimeoutMs?: number;
}

const operationColumns = `operation_id, request, status, shards_total, shards_moved,
  (extract(epoch FROM requested_at) * 1000)::bigint AS requested_ms, (extract(epoch FROM finished_at) * 1000)::bigint AS finished_ms, error`;

function toOperation(r: Record<string, unknown>): ClusterOperation {
  return {
    operationId: Number(r.operation_id),
    request: r.request as ClusterOperationRequest,
    status: r.status as ClusterOperation['status'],
    shardsTotal: r.shards_total as number,
    shardsMoved: r.shards_moved as number,
    requestedAtMs: Number(r.requested_ms),
    finishedAtMs: r.finished_ms === null ? null : Number(r.finished_ms),
    error: r.error as string | null,
  };
}

export function createPgClusterStore(pool: Pool, options: PgClusterStoreOptions = {}): ClusterStore {
  const timeoutMs = options.statementTimeoutMs ?? clusterStatementTimeoutMsDefault;

  /** One transaction; any error discards the connection (its session state is unknown). */
  async function transaction<T>(work: (query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>) => Promise<T>): Promise<T> {
    return withClient(pool, async (client: PoolClient, discard) => {
      const query = (text: string, values?: unknown[]) => client.query({ text, values, query_timeout: timeoutMs } as pg.QueryConfig);
      try {
        await query(
          `BEGIN; SET LOCAL statement_timeout = ${timeoutMs}; SET LOCAL lock_timeout = ${timeoutMs}; ` +
            `SET LOCAL idle_in_transaction_session_timeout = ${timeoutMs}`,
        );
        const result = await work(query);
        await query('COMMIT');
        return result;
      } catch (error) {
        discard(error as Error);
        throw error;
      }
    });
  }

  /** Holds the coordinator lease for this transaction, or null. */
  async function lockAsCoordinator(query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>, nodeId: string): Promise<boolean> {
    const held = await query(
      `SELECT 1 FROM cluster_state WHERE id = 1 AND coordinator_node = $1 AND coordinator_expires_at > now() FOR UPDATE`,
      [nodeId],
    );
    return held.rowCount === 1;
  }

  return {
    join: (request: JoinRequest) =>
      transaction(async (query) => {
        const state = await query('SELECT secrets_fingerprint FROM cluster_state WHERE id = 1 FOR UPDATE');
        const clusterFingerprint = (state.rows[0] as { secrets_fingerprint: string | null }).secrets_fingerprint;
        if (clusterFingerprint !== null && clusterFingerprint !== request.secretsFingerprint) throw new SecretsMismatchError(request.nodeId);
        if (clusterFingerprint === null) await query('UPDATE cluster_state SET secrets_fingerprint = $1 WHERE id = 1', [request.secretsFingerprint]);
        const joined = await query(
          `INSERT INTO cluster_nodes (node_id, az, url, status, incarnation, secrets_fingerprint)
           VALUES ($1, $2, $3, 'alive', 1, $4)
           ON CONFLICT (node_id) DO UPDATE SET az = $2, url = $3, status = 'alive', incarnation = cluster_nodes.incarnation + 1,
             started_at = now(), heartbeat_at = now(), secrets_fingerprint = $4, draining = false
           RETURNING incarnation`,
          [request.nodeId, request.az, request.url, request.secretsFingerprint],
        );
        await query('UPDATE cluster_state SET version = version + 1 WHERE id = 1');
        return { incarnation: Number((joined.rows[0] as { incarnation: string }).incarnation) };
      }),

    heartbeat: (nodeId, incarnation, options) =>
      transaction(async (query): Promise<HeartbeatResult> => {
        const beat = await query(
          `UPDATE cluster_nodes SET heartbeat_at = now() WHERE node_id = $1 AND incarnation = $2 AND status = 'alive' RETURNING 1`,
          [nodeId, incarnation],
        );
        const alive = beat.rowCount === 1;
        let coordinator = false;
        if (alive && options.wantCoordinator) {
          const lease = await query(
            `UPDATE cluster_state SET coordinator_node = $1, coordinator_expires_at = now() + $2 * interval '1 millisecond'
             WHERE id = 1 AND (coordinator_node = $1 OR coordinator_node IS NULL OR coordinator_expires_at <= now()
               OR coordinator_node NOT IN (SELECT node_id FROM cluster_nodes WHERE status = 'alive'))
             RETURNING 1`,
            [nodeId, options.coordinatorLeaseMs],
          );
          coordinator = lease.rowCount === 1;
        }
        const state = await query('SELECT version, elections_version FROM cluster_state WHERE id = 1');
        const row = state.rows[0] as { version: string; elections_version: string };
        return { alive, coordinator, version: Number(row.version), electionsVersion: Number(row.elections_version) };
      }),

    readView: () =>
      transaction(async (query): Promise<ClusterView> => {
        // One snapshot for the whole view (REPEATABLE READ would cost a round trip more; the
        // statements below read rows that change only through the version bump they also read).
        const state = await query(
          `SELECT version, elections_version, CASE WHEN coordinator_expires_at > now() THEN coordinator_node END AS coordinator_node,
             (extract(epoch FROM now()) * 1000)::bigint AS now_ms FROM cluster_state WHERE id = 1`,
        );
        const nodes = await query(
          `SELECT node_id, az, url, status, incarnation, draining, (extract(epoch FROM started_at) * 1000)::bigint AS started_ms,
             (extract(epoch FROM heartbeat_at) * 1000)::bigint AS heartbeat_ms FROM cluster_nodes ORDER BY node_id`,
        );
        const shards = await query(
          `SELECT o.election_id::text AS election_id, o.shard, o.owner_node, o.map_version, o.pinned, o.replica_nodes, coalesce(l.epoch, 0) AS epoch, l.owner_node AS lease_node,
             coalesce((extract(epoch FROM l.expires_at) * 1000)::bigint, 0) AS lease_expires_ms
           FROM shard_owners o LEFT JOIN shard_leases l ON l.election_id = o.election_id AND l.shard = o.shard
           ORDER BY o.election_id, o.shard`,
        );
        const elections = await query(`SELECT election_id::text AS election_id, shard_count FROM elections WHERE status <> 'draft' ORDER BY election_id`);
        const operations = await query(`SELECT ${operationColumns} FROM cluster_operations WHERE status IN ('pending', 'running') ORDER BY operation_id`);
        const s = state.rows[0] as { version: string; elections_version: string; coordinator_node: string | null; now_ms: string };
        return {
          version: Number(s.version),
          electionsVersion: Number(s.elections_version),
          coordinatorNodeId: s.coordinator_node,
          readAtMs: Number(s.now_ms),
          nodes: nodes.rows.map(
            (r): MemberRecord => ({
              nodeId: r.node_id, az: r.az, url: r.url, status: r.status, incarnation: Number(r.incarnation),
              startedAtMs: Number(r.started_ms), lastHeartbeatAtMs: Number(r.heartbeat_ms), draining: r.draining,
            }),
          ),
          shards: shards.rows.map(
            (r): ShardOwnerRecord => ({
              electionId: r.election_id, shard: r.shard, ownerNodeId: r.owner_node, mapVersion: Number(r.map_version),
              epoch: Number(r.epoch), leaseNodeId: r.lease_node, leaseExpiresAtMs: Number(r.lease_expires_ms), pinned: r.pinned,
              replicaNodeIds: r.replica_nodes,
            }),
          ),
          elections: elections.rows.map((r) => ({ electionId: r.election_id, shardCount: r.shard_count })),
          operations: operations.rows.map(toOperation),
        };
      }),

    declareSilentNodesDead: (coordinatorNodeId, deadAfterMs) =>
      transaction(async (query) => {
        if (!(await lockAsCoordinator(query, coordinatorNodeId))) return null;
        const dead = await query(
          `UPDATE cluster_nodes SET status = 'dead'
           WHERE status = 'alive' AND node_id <> $1 AND heartbeat_at < now() - $2 * interval '1 millisecond' RETURNING node_id`,
          [coordinatorNodeId, deadAfterMs],
        );
        if (dead.rowCount === 0) return [];
        await query('UPDATE cluster_state SET version = version + 1 WHERE id = 1');
        return dead.rows.map((r) => r.node_id as string).sort();
      }),

    assignShards: (coordinatorNodeId, assignments: readonly ShardAssignment[]) =>
      transaction(async (query) => {
        if (!(await lockAsCoordinator(query, coordinatorNodeId))) return null;
        const bumped = await query('UPDATE cluster_state SET version = version + 1 WHERE id = 1 RETURNING version');
        const version = Number((bumped.rows[0] as { version: string }).version);
        if (assignments.length === 0) return version;
        // Elections deleted meanwhile are skipped by the join, not an error. Replicas travel as
        // comma-joined node ids (ids are [a-z0-9-]); null keeps the row's replicas.
        await query(
          `INSERT INTO shard_owners (election_id, shard, owner_node, map_version, pinned, replica_nodes)
           SELECT a.election_id, a.shard, a.owner_node, $4, a.pinned, coalesce(string_to_array(a.replicas, ','), o.replica_nodes, '{}')
           FROM unnest($1::uuid[], $2::integer[], $3::text[], $5::boolean[], $6::text[]) AS a(election_id, shard, owner_node, pinned, replicas)
           JOIN elections e ON e.election_id = a.election_id
           LEFT JOIN shard_owners o ON o.election_id = a.election_id AND o.shard = a.shard
           ON CONFLICT (election_id, shard) DO UPDATE SET owner_node = excluded.owner_node, map_version = excluded.map_version, pinned = excluded.pinned,
             replica_nodes = excluded.replica_nodes`,
          [assignments.map((a) => a.electionId), assignments.map((a) => a.shard), assignments.map((a) => a.ownerNodeId), version,
            assignments.map((a) => a.pinned ?? false), assignments.map((a) => (a.replicaNodeIds === undefined ? null : a.replicaNodeIds.join(',')))],
        );
        return version;
      }),

    requestOperation: (request: ClusterOperationRequest) =>
      transaction(async (query): Promise<ClusterOperation> => {
        const nodeState = async (nodeId: string) => {
          const found = await query('SELECT status FROM cluster_nodes WHERE node_id = $1', [nodeId]);
          if (found.rowCount === 0) throw new ClusterOperationRefused('node_not_found', `no node ${nodeId} in this cluster`);
          return (found.rows[0] as { status: string }).status;
        };
        if (request.kind === 'move') {
          if ((await nodeState(request.toNodeId)) !== 'alive') throw new ClusterOperationRefused('node_not_alive', `node ${request.toNodeId} is not alive`);
          const row = await query('SELECT owner_node FROM shard_owners WHERE election_id = $1 AND shard = $2', [request.electionId, request.shard]);
          if (row.rowCount === 0) throw new ClusterOperationRefused('shard_not_found', `no shard ${request.shard} of election ${request.electionId} in the map`);
          if ((row.rows[0] as { owner_node: string }).owner_node === request.toNodeId) {
            throw new ClusterOperationRefused('already_there', `shard ${request.shard} of election ${request.electionId} is already on ${request.toNodeId}`);
          }
        } else if (request.kind === 'drain') {
          if ((await nodeState(request.nodeId)) !== 'alive') throw new ClusterOperationRefused('node_not_alive', `node ${request.nodeId} is not alive`);
        } else if (request.kind === 'undrain') {
          if ((await nodeState(request.nodeId)) !== 'alive') throw new ClusterOperationRefused('node_not_alive', `node ${request.nodeId} is not alive`);
          // Draining, or about to be: a drain not started yet is ended by the undrain too.
          const draining = await query(
            `SELECT 1 FROM cluster_nodes WHERE node_id = $1 AND draining
             UNION ALL SELECT 1 FROM cluster_operations WHERE kind = 'drain' AND status IN ('pending', 'running') AND request->>'nodeId' = $1`,
            [request.nodeId],
          );
          if (draining.rowCount === 0) throw new ClusterOperationRefused('node_not_draining', `node ${request.nodeId} is not draining`);
        }
        const inserted = await query(
          `INSERT INTO cluster_operations (kind, request) VALUES ($1, $2) RETURNING ${operationColumns}`,
          [request.kind, JSON.stringify(request)],
        );
        // The coordinator sees it at its next round (it reads the open operations with the view).
        await query('UPDATE cluster_state SET version = version + 1 WHERE id = 1');
        return toOperation(inserted.rows[0]);
      }),

    listOperations: (limit) =>
      transaction(async (query) => {
        const rows = await query(`SELECT ${operationColumns} FROM cluster_operations ORDER BY operation_id DESC LIMIT $1`, [Math.max(1, Math.min(1000, limit))]);
        return rows.rows.map(toOperation);
      }),

    getOperation: (operationId) =>
      transaction(async (query) => {
        const rows = await query(`SELECT ${operationColumns} FROM cluster_operations WHERE operation_id = $1`, [operationId]);
        return rows.rowCount === 0 ? undefined : toOperation(rows.rows[0]);
      }),

    updateOperation: (coordinatorNodeId, operationId, update) =>
      transaction(async (query) => {
        if (!(await lockAsCoordinator(query, coordinatorNodeId))) return false;
        const finished = update.status === 'done' || update.status === 'failed';
        await query(
          `UPDATE cluster_operations SET status = $2, shards_total = coalesce($3, shards_total), shards_moved = coalesce($4, shards_moved),
             error = coalesce($5, error), finished_at = CASE WHEN $6 THEN now() ELSE finished_at END WHERE operation_id = $1`,
          [operationId, update.status, update.shardsTotal ?? null, update.shardsMoved ?? null, update.error ?? null, finished],
        );
        return true;
      }),

    setDraining: (coordinatorNodeId, nodeId, draining) =>
      transaction(async (query) => {
        if (!(await lockAsCoordinator(query, coordinatorNodeId))) return false;
        const changed = await query('UPDATE cluster_nodes SET draining = $2 WHERE node_id = $1 AND draining <> $2', [nodeId, draining]);
        if (changed.rowCount === 1) await query('UPDATE cluster_state SET version = version + 1 WHERE id = 1');
        return true;
      }),

    leave: (nodeId, incarnation) =>
      transaction(async (query) => {
        const left = await query(`UPDATE cluster_nodes SET status = 'left' WHERE node_id = $1 AND incarnation = $2 AND status = 'alive'`, [nodeId, incarnation]);
        if (left.rowCount === 1) {
          await query(
            `UPDATE cluster_state SET version = version + 1,
               coordinator_node = CASE WHEN coordinator_node = $1 THEN NULL ELSE coordinator_node END WHERE id = 1`,
            [nodeId],
          );
        }
      }),
  };
}
