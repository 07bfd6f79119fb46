// Who this node is: an id other nodes and the lease table know it by, and its availability zone
// (replicas of a shard go to other zones).
import os from 'node:os';

export interface NodeIdentity {
  readonly nodeId: string;
  readonly availabilityZone: string;
}

/** Same limits as LIVEVOTE_NODE_ID (infra/config.ts): 1-40 of a-z, 0-9, -. */
export const nodeIdLengthMax = 40;
const nodeIdPattern = /^[a-z0-9-]{1,40}$/;

/**
 * The configured id, else `hostname-pid`: unique per process, so two processes on one machine
 * (the local cluster launcher) never share leases by accident. A restarted process therefore
 * has a new id; in cluster mode it waits for its old leases to expire, and in single-node mode
 * it takes them over at once (cluster/leases.ts, takeOver 'any').
 */
export function resolveNodeIdentity(
  config: { readonly nodeId: string | undefined; readonly availabilityZone: string },
  host: string = os.hostname(),
  pid: number = process.pid,
): NodeIdentity {
  if (config.availabilityZone.length === 0) throw new Error('availabilityZone must not be empty');
  if (config.nodeId !== undefined) {
    if (!nodeIdPattern.test(config.nodeId)) throw new Error(`nodeId must be 1-40 of a-z, 0-9, -: ${JSON.stringify(config.nodeId)}`);
    return { nodeId: config.nodeId, availabilityZone: config.availabilityZone };
  }
  if (!(Number.isInteger(pid) && pid >= 0)) throw new Error(`pid must be a non-negative integer, got ${pid}`);
  const suffix = `-${pid}`;
  const hostPart =
    host
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, nodeIdLengthMax - suffix.length)
      .replace(/-+$/, '') || 'node';
  const nodeId = `${hostPart}${suffix}`;
  if (!nodeIdPattern.test(nodeId)) throw new Error(`derived nodeId is invalid: ${JSON.stringify(nodeId)}`);
  return { nodeId, availabilityZone: config.availabilityZone };
}
