import type { Feature } from '../app.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Pool } from '../../persistence/db.ts';
import { listElections } from '../../persistence/elections.ts';
import { ElectionRegistry } from './registry.ts';
import { electionRoutes } from './routes.ts';

export interface ElectionsFeature extends Feature {
  readonly registry: ElectionRegistry;
  /** Reads every election again (another node changed one) and publishes what changed. */
  reload(): Promise<void>;
}

export function createElectionsFeature(deps: { pool: Pool; log: Logger }): ElectionsFeature {
  const registry = new ElectionRegistry();
  return {
    registry,
    async reload() {
      for (const election of await listElections(deps.pool)) await registry.publish(election, 'store');
    },
    routes: electionRoutes({ pool: deps.pool, registry }),
    async start() {
      for (const election of await listElections(deps.pool)) await registry.publish(election, 'store');
      deps.log.info({ elections: registry.all().length }, 'elections loaded');
    },
    async stop() {},
  };
}
