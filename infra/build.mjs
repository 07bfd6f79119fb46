// `npm run build`: livevote as plain JavaScript for production, `node dist/infra/main.js` (and
// `node dist/infra/cli.js`), so nothing compiles TypeScript at start-up and no npm sits between
// the process manager and node. tsc compiles what infra/main.ts and infra/cli.ts import, and the
// worker threads' entries, which nothing imports (persistence/journalWorkerThread.ts,
// gateway/requestChecks.worker.ts; tsconfig.build.json), rewriting the `.ts` in relative imports
// to `.js`; the files the code reads next to itself at run time (the browser pages' files, the
// SQL migrations) are copied beside it.
//
//   node infra/build.mjs [--out-dir <dir>]   (default dist/; a dir inside the repository, so
//                                             node_modules is found from it)
// Plain JavaScript: it runs before any TypeScript tooling is loaded.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outFlag = process.argv.indexOf('--out-dir');
const outDir = path.resolve(root, outFlag === -1 ? 'dist' : (process.argv[outFlag + 1] ?? ''));
if (outDir === root || !outDir.startsWith(root + path.sep)) {
  process.stderr.write(`build: the output dir must be inside ${root}, got ${outDir}\n`);
  process.exit(2);
}

rmSync(outDir, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', outDir], { cwd: root, stdio: 'inherit' });

const copy = (relative) => {
  mkdirSync(path.dirname(path.join(outDir, relative)), { recursive: true });
  cpSync(path.join(root, relative), path.join(outDir, relative));
};
// The browser pages' own files (HTML, scripts, icons): everything but the server's TypeScript.
for (const file of readdirSync(path.join(root, 'gateway/dashboard'))) {
  if (!file.endsWith('.ts')) copy(path.join('gateway/dashboard', file));
}
for (const file of readdirSync(path.join(root, 'persistence/migrations'))) {
  if (file.endsWith('.sql')) copy(path.join('persistence/migrations', file));
}
// The version the app reports (gateway/app.ts reads ../package.json), and "type": "module" for
// the compiled files wherever the output dir is.
const { name, version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
writeFileSync(path.join(outDir, 'package.json'), `${JSON.stringify({ name, version, private: true, type: 'module' }, null, 2)}\n`);
process.stderr.write(`livevote built into ${path.relative(root, outDir)}/: node ${path.relative(root, path.join(outDir, 'infra/main.js'))}\n`);
