// One livevote node (started by infra/main.ts) until SIGTERM/SIGINT, then a graceful shutdown and exit 0.
// Started by the cluster launcher (infra/clusterCli.ts), a node also stops so when the launcher's
// IPC channel closes: the launcher is gone, however it ended (kill -9 included), and a node left
// running would be an orphan nobody stops.
import { ConfigError, loadConfig } from './config.ts';
import { createLogger } from './logger.ts';
import { startNode } from './node.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`livevote: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const log = createLogger(config.logLevel);
  const node = await startNode(config, log);
  let signalled = false;
  const shutdown = (signal: NodeJS.Signals | 'launcher gone') => {
    if (signalled) return;
    signalled = true;
    log.info({ signal }, 'shutting down: no new requests, finishing the ones in flight');
    node.stop().then(
      () => {
        log.info('stopped cleanly');
        process.exit(0);
      },
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  if (process.channel !== undefined) {
    // The channel alone must not keep a stopped node alive.
    process.channel.unref();
    process.on('disconnect', () => shutdown('launcher gone'));
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`livevote: failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
