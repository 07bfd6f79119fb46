// Runs before `npm start` and `npm test` so the README's quick start is two commands on a fresh
// clone: install the locked dependencies when node_modules is missing or older than the lock.
// Plain JavaScript: it must run before TypeScript tooling is installed.
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const lockFile = path.join(root, 'package-lock.json');
const installedMarker = path.join(root, 'node_modules', '.package-lock.json');

const upToDate = existsSync(installedMarker) && statSync(installedMarker).mtimeMs >= statSync(lockFile).mtimeMs;
if (!upToDate) {
  process.stderr.write('livevote: installing dependencies ...\n');
  // Not `npm ci`: it refuses a lock whose other-platform optional binaries the registry lacks.
  execFileSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: root, stdio: 'inherit' });
}
