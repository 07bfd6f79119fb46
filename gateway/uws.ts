// Load the native uWebSockets.js binary directly. The package we install it from silently falls
// back to a slow pure-JS build when the binary does not load; a vote gateway on that fallback
// would meet none of its targets, so we refuse to start instead.
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as UwsTypes from 'uWebSockets.js';

const require = createRequire(import.meta.url);

function loadNativeUws(): typeof UwsTypes {
  const packageDir = path.dirname(require.resolve('uWebSockets.js/package.json'));
  const binary = path.join(
    packageDir,
    'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
  );
  try {
    return require(binary) as typeof UwsTypes;
  } catch (error) {
    throw new Error(
      `uWebSockets.js native binary could not be loaded (${binary}): ${(error as Error).message}. ` +
        'livevote refuses to run on the slow JavaScript fallback; use Node 20 on linux-x64, darwin or win32-x64.',
    );
  }
}

export const uws = loadNativeUws();
export type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_listen_socket } from 'uWebSockets.js';
