// `livevote cluster move|drain|balance|operations` over the operations port: argument parsing,
// what is printed, --wait following an operation to its end, and the exit statuses (0 done, 1
// failed, 2 refused). The port here is scripted: each get() returns the next state of the
// operation. The same commands against the real store and a running cluster: gateway/cluster/ops.e2e.test.ts.
import { describe, expect, it } from 'vitest';
import { ClusterOperationRefused, type ClusterOperation, type ClusterOperationRequest, type ClusterOperations } from '../cluster/ports.ts';
import { formatOperationsTable, parseLaunchOptions, parseOperationCommand, runOperationCommand } from './clusterCli.ts';

const electionId = '7f0c1d2e-3a4b-4c5d-8e6f-0123456789ab';

function operationOf(request: ClusterOperationRequest, changes: Partial<ClusterOperation> = {}): ClusterOperation {
  return {
    operationId: 7, request, status: 'pending', shardsTotal: 0, shardsMoved: 0,
    requestedAtMs: Date.UTC(2026, 11, 1, 12), finishedAtMs: null, error: null, ...changes,
  };
}

/** request() records; get() walks through `states` (the last one repeats). */
function scriptedPort(states: Partial<ClusterOperation>[], refuse?: ClusterOperationRefused): ClusterOperations & { requests: ClusterOperationRequest[]; gets: number } {
  let current: ClusterOperation | undefined;
  return {
    requests: [],
    gets: 0,
    async request(request) {
      if (refuse) throw refuse;
      this.requests.push(request);
      current = operationOf(request);
      return current;
    },
    async list(limit = 20) {
      return current ? [current].slice(0, limit) : [];
    },
    async get(operationId) {
      const state = states[Math.min(this.gets, states.length - 1)];
      this.gets++;
      return current && operationId === current.operationId ? (current = { ...current, ...state }) : undefined;
    },
  };
}

async function run(port: ClusterOperations, args: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const [command, ...rest] = args as ['move' | 'drain' | 'undrain' | 'balance' | 'operations', ...string[]];
  let clock = 0;
  const status = await runOperationCommand(port, parseOperationCommand(command, rest), { out: (t) => { out += t; }, err: (t) => { err += t; } }, {
    pollIntervalMs: 500, pendingHintAfterMs: 2_000, sleep: async (ms) => { clock += ms; }, nowMs: () => clock,
  });
  return { status, out, err };
}

describe('livevote cluster --nodes N --azs a,b,c', () => {
  it('parses the launcher options and names what is wrong, a mistyped command as a command', () => {
    expect(parseLaunchOptions([])).toEqual({ nodes: 3, azs: ['a', 'b', 'c'] });
    expect(parseLaunchOptions(['--nodes', '2', '--azs', 'x,y'])).toEqual({ nodes: 2, azs: ['x', 'y'] });
    const bad: [string[], RegExp][] = [
      [['--nodes', '3', '--azs'], /^--azs needs a value$/],
      [['--nodes'], /^--nodes needs a value$/],
      [['--nodes', '0'], /--nodes must be 1\.\.32, got 0/],
      [['--azs', 'A,b'], /--azs must be a comma-separated list/],
      [['stauts'], /^unknown command: cluster stauts \(cluster takes status, move, drain, undrain, balance, operations, or --nodes N --azs a,b,c\)$/],
      [['--nodes', '3', 'extra'], /^unknown argument: extra$/],
    ];
    for (const [args, message] of bad) expect(() => parseLaunchOptions(args), args.join(' ')).toThrow(message);
  });
});

describe('livevote cluster move|drain|balance|operations', () => {
  it('parses each command and refuses bad arguments with a message', () => {
    expect(parseOperationCommand('move', [electionId.toUpperCase(), '3', 'node-2', '--wait'])).toEqual({
      kind: 'request', request: { kind: 'move', electionId, shard: 3, toNodeId: 'node-2' }, wait: true,
    });
    expect(parseOperationCommand('drain', ['node-1'])).toEqual({ kind: 'request', request: { kind: 'drain', nodeId: 'node-1' }, wait: false });
    expect(parseOperationCommand('undrain', ['node-1', '--wait'])).toEqual({ kind: 'request', request: { kind: 'undrain', nodeId: 'node-1' }, wait: true });
    expect(parseOperationCommand('balance', ['--wait'])).toEqual({ kind: 'request', request: { kind: 'balance' }, wait: true });
    expect(parseOperationCommand('operations', [])).toEqual({ kind: 'list', limit: 20 });
    expect(parseOperationCommand('operations', ['--limit', '5'])).toEqual({ kind: 'list', limit: 5 });
    const bad: [Parameters<typeof parseOperationCommand>[0], string[], RegExp][] = [
      ['move', [electionId, '3'], /takes <electionId> <shard> <nodeId>, got/],
      ['move', ['not-a-uuid', '3', 'node-2'], /electionId must be a UUID/],
      ['move', [electionId, '-1', 'node-2'], /unknown argument: -1/],
      ['move', [electionId, 'x', 'node-2'], /shard must be a shard number/],
      ['move', [electionId, '1.5', 'node-2'], /shard must be a shard number/],
      ['move', [electionId, '3', 'Node 2'], /nodeId must be/],
      ['drain', [], /takes <nodeId>, got none/],
      ['undrain', ['node-1', 'node-2'], /takes <nodeId>, got node-1 node-2/],
      ['drain', ['node-1', '--now'], /unknown argument: --now/],
      ['balance', ['node-1'], /takes no arguments/],
      ['operations', ['--limit', '0'], /--limit must be 1..200/],
      ['operations', ['--limit'], /--limit needs a value/],
    ];
    for (const [command, args, message] of bad) expect(() => parseOperationCommand(command, args), args.join(' ')).toThrow(message);
  });

  it('records an operation and prints it; without --wait it does not wait', async () => {
    const port = scriptedPort([{ status: 'running' }]);
    const result = await run(port, ['drain', 'node-2']);
    expect(result).toEqual({ status: 0, out: 'operation 7  drain node-2  pending\nrecorded; follow it with: livevote cluster operations (or --wait)\n', err: '' });
    expect(port.requests).toEqual([{ kind: 'drain', nodeId: 'node-2' }]);
    expect(port.gets).toBe(0);
  });

  it('--wait prints each change of progress and exits 0 when done', async () => {
    const port = scriptedPort([
      { status: 'pending' }, { status: 'running', shardsTotal: 3 }, { status: 'running', shardsTotal: 3 },
      { status: 'running', shardsTotal: 3, shardsMoved: 2 }, { status: 'done', shardsTotal: 3, shardsMoved: 3, finishedAtMs: Date.UTC(2026, 11, 1, 12, 0, 4) },
    ]);
    const result = await run(port, ['move', electionId, '3', 'node-2', '--wait']);
    expect(result.out.split('\n')).toEqual([
      `operation 7  move shard 3 of ${electionId} to node-2  pending`,
      `operation 7  move shard 3 of ${electionId} to node-2  running, 0/3 shards moved`,
      `operation 7  move shard 3 of ${electionId} to node-2  running, 2/3 shards moved`,
      `operation 7  move shard 3 of ${electionId} to node-2  done, 3/3 shards moved`,
      '',
    ]);
    expect([result.status, result.err, port.gets]).toEqual([0, '', 5]);
  });

  it('--wait exits 1 when the operation fails, with its reason', async () => {
    const port = scriptedPort([{ status: 'running', shardsTotal: 4, shardsMoved: 1 }, { status: 'failed', shardsTotal: 4, shardsMoved: 1, error: 'node-3 died mid-move' }]);
    const result = await run(port, ['balance', '--wait']);
    expect(result.status).toBe(1);
    expect(result.out).toContain('operation 7  balance  failed, 1/4 shards moved: node-3 died mid-move\n');
  });

  it('--wait says once that a running node is needed when the operation stays pending', async () => {
    const port = scriptedPort([...Array.from({ length: 10 }, () => ({ status: 'pending' as const })), { status: 'done' }]);
    const result = await run(port, ['balance', '--wait']);
    expect(result.status).toBe(0);
    expect(result.err.match(/still pending/g)).toHaveLength(1);
    expect(result.err).toContain('is a livevote node running on this database?');
  });

  it('exits 2 on a refusal, having recorded nothing', async () => {
    const port = scriptedPort([], new ClusterOperationRefused('node_not_found', 'no node node-9 in the cluster'));
    const result = await run(port, ['drain', 'node-9', '--wait']);
    expect(result).toEqual({ status: 2, out: '', err: 'livevote: refused (node_not_found): no node node-9 in the cluster; nothing was recorded\n' });
  });

  it('lists operations as a table', async () => {
    expect(formatOperationsTable([])).toBe('No cluster operations yet.\n');
    const done = operationOf({ kind: 'drain', nodeId: 'node-1' }, { operationId: 2, status: 'done', shardsTotal: 8, shardsMoved: 8, finishedAtMs: Date.UTC(2026, 11, 1, 12, 0, 12, 500) });
    const failed = operationOf({ kind: 'move', electionId, shard: 1, toNodeId: 'node-3' }, { operationId: 1, status: 'failed', error: 'node-3 is gone' });
    expect(formatOperationsTable([done, failed]).split('\n')).toEqual([
      `ID  KIND   WHAT${' '.repeat(60)}STATUS  MOVED  REQUESTED                 TOOK    ERROR`,
      `2   drain  drain node-1${' '.repeat(52)}done    8/8    2026-12-01T12:00:00.000Z  12.5 s`,
      `1   move   move shard 1 of ${electionId} to node-3  failed  0/0    2026-12-01T12:00:00.000Z          node-3 is gone`,
      '',
    ]);
  });
});
