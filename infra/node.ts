// Starts one livevote node: secrets, database (embedded when DATABASE_URL is unset), migrations,
// the gateway, listen. Returns a handle whose stop() is the graceful shutdown sequence.
import { buildApp, type LivevoteApp } from '../gateway/app.ts';
import { createPool, endPool, isServerShutdownError, type Pool } from '../persistence/db.ts';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../persistence/embeddedPostgres.ts';
import { migrate } from '../persistence/migrate.ts';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import { createMetrics } from './metrics.ts';
import { loadOrCreateSecrets } from './secrets.ts';

export interface RunningNode {
  readonly app: LivevoteApp;
  readonly port: number;
  readonly pool: Pool;
  readonly databaseUrl: string;
  stop(): Promise<void>;
}

export async function startNode(config: Config, log: Logger): Promise<RunningNode> {
  const { secrets, generatedAdminPassword } = await loadOrCreateSecrets(config);
  let embedded: EmbeddedPostgresHandle | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, password: secrets.embeddedDbPassword, log, durable: true });
    databaseUrl = embedded.url;
  }
  const pool = createPool(databaseUrl, config.dbPoolMax, 'livevote', (error) => {
    // A Postgres that stops closes its idle sessions: worth a line, not a stack trace.
    if (isServerShutdownError(error)) log.info({ code: (error as { code?: string }).code }, 'Postgres closed an idle connection (it is shutting down); the pool reconnects when needed');
    else log.warn({ err: error }, 'idle database connection failed; the pool replaces it');
  });
  let app: LivevoteApp | undefined;
  try {
    const applied = await migrate(pool);
    if (applied.length > 0) log.info({ versions: applied }, 'migrations applied');
    app = await buildApp({ config, secrets, pool, log, metrics: createMetrics({ defaultMetrics: true }) });
    const port = await app.listen(config.host, config.port);
    log.info({ host: config.host, port, database: embedded ? 'embedded' : 'external' }, 'livevote is listening');
    if (generatedAdminPassword) {
      // Printed once, on the start that generated it, as such tools do; never logged.
      process.stdout.write(
        `\n  First start: an admin account was created.\n    email:    ${secrets.adminEmail}\n    password: ${generatedAdminPassword}\n` +
          `  Set LIVEVOTE_ADMIN_EMAIL / LIVEVOTE_ADMIN_PASSWORD to choose your own. This is the only time it is shown.\n\n`,
      );
    }
    let stopping: Promise<void> | undefined;
    const built = app;
    return {
      app,
      port,
      pool,
      databaseUrl,
      stop() {
        stopping ??= (async () => {
          await built.close();
          await endPool(pool);
          await embedded?.stop();
        })();
        return stopping;
      },
    };
  } catch (error) {
    // The app's features (timers, the cluster's rounds) use the pool: stopped first, or they
    // log "Cannot use a pool after calling end on the pool" on their way out.
    await app?.close().catch(() => undefined);
    await endPool(pool).catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    throw error;
  }
}
