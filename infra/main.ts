// `npm start`, and `node dist/infra/main.js` in production: one livevote node (infra/nodeMain.ts).
//
// First, before any of livevote's modules is loaded: V8 allocates a function's feedback vector
// from its first call instead of after several. With feedback allocated lazily, the functions
// created as the modules load were optimized with their string property loads (length,
// charCodeAt, slice: the token check, the body's ids, the journal's rows) left to V8's generic
// inline-cache stub: Builtins_LoadIC was 8.7% of livevote's CPU in perf of a 100-connection run,
// 1.0% with the flag, 1-4 µs less CPU per vote (bench/README.md, "Thirteenth look"). Set once the
// modules are loaded, the flag changed nothing: hence this file, which loads the node after it.
import v8 from 'node:v8';

v8.setFlagsFromString('--no-lazy-feedback-allocation');
await import('./nodeMain.ts');
