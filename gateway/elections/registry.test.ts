import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ElectionRecord } from '../../persistence/elections.ts';
import { ElectionRegistry, type ElectionOrigin } from './registry.ts';

function record(electionId: string, status: ElectionRecord['status']): ElectionRecord {
  return {
    electionId, title: 'registry', status, shardCount: 2, captchaPolicy: 'off', createdAt: new Date(0),
    openedAt: status === 'draft' ? null : new Date(1), closedAt: status === 'closed' ? new Date(2) : null,
    candidates: [{ candidateId: randomUUID(), candidateIndex: 0, name: 'c0' }],
  };
}

describe('the election registry', () => {
  it('keeps a change made here when a read of the table taken before it lands after it, and tells listeners where each change came from', async () => {
    const registry = new ElectionRegistry();
    const heard: [string, string | undefined, ElectionOrigin][] = [];
    registry.onChange((election, previousStatus, origin) => {
      heard.push([election.status, previousStatus, origin]);
    });
    const electionId = randomUUID();
    await registry.publish(record(electionId, 'draft'), 'this_node');
    // Read before the open was stored, published after it (a cluster reload held up by the database).
    await registry.publish(record(electionId, 'open'), 'this_node');
    const stale = await registry.publish(record(electionId, 'draft'), 'store');
    expect(stale.status).toBe('open');
    expect(registry.get(electionId)?.status).toBe('open');
    await registry.publish(record(electionId, 'closed'), 'store');
    expect((await registry.publish(record(electionId, 'open'), 'this_node')).status).toBe('closed');
    expect(heard).toEqual([['draft', undefined, 'this_node'], ['open', 'draft', 'this_node'], ['closed', 'open', 'store']]);
  });
});
