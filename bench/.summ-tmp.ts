import { summariseCpuProfile } from '/work/wt/perf/bench/lib/cpuProfile.ts';
import { readdirSync } from 'node:fs';
const dir = process.argv[2]!;
const f = readdirSync(dir).find((x) => x.endsWith('.cpuprofile'))!;
const s = await summariseCpuProfile(`${dir}/${f}`, undefined, 60);
console.log('samples', s.samples, 'idle%', s.idlePercent);
console.log('AREAS'); for (const a of s.areas.slice(0, 25)) console.log(a.percent.toFixed(1).padStart(5), a.area);
console.log('SELF'); for (const a of s.selfTop.slice(0, 45)) console.log(a.percent.toFixed(1).padStart(5), a.frame, '<-', a.calledFrom ?? '');
console.log('INCL'); for (const a of s.inclusiveTop.slice(0, 45)) console.log(a.percent.toFixed(1).padStart(5), a.frame);
