// Summarises a V8 .cpuprofile (node --cpu-prof) over a time window: self time by frame, self
// time by area (project file, package, node internals, GC), and inclusive time by frame.
// Profile timestamps are CLOCK_MONOTONIC microseconds, the clock of process.hrtime here too, so
// a window measured in this process selects exactly the samples of a load run in the child.
//
// Positions: tsx compiles each .ts file to one minified line, so the profile's (line, column)
// are of that line. This process runs under tsx too (same version, same files, same options),
// so importing a project module here and asking node:module's findSourceMap for it maps the
// position back to the original line.
import { findSourceMap } from 'node:module';
import { readFile } from 'node:fs/promises';
import { repoRoot } from './proc.ts';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number; readonly columnNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface FrameShare {
  readonly frame: string;
  readonly area: string;
  readonly ms: number;
  /** Percent of the busy (non-idle) samples in the window. */
  readonly percent: number;
  /** Self-time frames: the caller that most of this frame's time came through, and its share. */
  readonly calledFrom?: string;
  readonly calledFromPercent?: number;
}

export interface ProfileSummary {
  readonly windowMs: number;
  readonly samples: number;
  readonly idlePercent: number;
  readonly selfTop: readonly FrameShare[];
  readonly areas: readonly FrameShare[];
  readonly inclusiveTop: readonly FrameShare[];
}

function shortUrl(url: string): string {
  let u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) return u.slice(nm + '/node_modules/'.length);
  if (u.startsWith(repoRoot + '/')) u = u.slice(repoRoot.length + 1);
  // The compiled build the bench runs (bench/lib/livevote.ts): its lines are the .js file's.
  if (u.startsWith('bench/out/dist/')) u = u.slice('bench/out/dist/'.length);
  return u;
}

function areaOf(frame: ProfileNode['callFrame']): string {
  const name = frame.functionName;
  if (name.startsWith('(')) return name; // (garbage collector), (program), (idle)
  const url = frame.url;
  if (url === '') return '(native / V8 builtins)';
  if (url.startsWith('node:')) return 'node internals';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return `pkg ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  return shortUrl(url);
}

/** Original 1-based line of a frame's function, through the module's source map when it has one. */
const originalLines = new Map<string, number>();

function frameLabel(frame: ProfileNode['callFrame']): string {
  // V8's pseudo-frames ("(garbage collector)", "(program)", "(idle)") and natives have no place.
  if (frame.functionName.startsWith('(') || frame.url === '') return frame.functionName || '(anonymous native)';
  const name = frame.functionName || '(anonymous)';
  const line = originalLines.get(`${frame.url}:${frame.lineNumber}:${frame.columnNumber}`) ?? frame.lineNumber + 1;
  return `${name} ${shortUrl(frame.url)}:${line}`;
}

/** Loads the project's own modules seen in the profile (never the entry point) and maps positions. */
async function mapProjectPositions(nodes: readonly ProfileNode[]): Promise<void> {
  const projectPrefix = `file://${repoRoot}/`;
  const entryPoints = new Set([`${projectPrefix}infra/main.ts`, `${projectPrefix}infra/nodeMain.ts`, `${projectPrefix}infra/cli.ts`]);
  const loaded = new Set<string>();
  for (const node of nodes) {
    const { url, lineNumber, columnNumber } = node.callFrame;
    if (!url.startsWith(projectPrefix) || url.includes('/node_modules/') || !url.endsWith('.ts') || entryPoints.has(url)) continue;
    if (!loaded.has(url)) {
      loaded.add(url);
      await import(url).catch(() => undefined);
    }
    const entry = findSourceMap(url)?.findEntry(lineNumber, columnNumber);
    if (entry && 'originalLine' in entry && typeof entry.originalLine === 'number') {
      originalLines.set(`${url}:${lineNumber}:${columnNumber}`, entry.originalLine + 1);
    }
  }
}

export async function summariseCpuProfile(file: string, window?: { fromUs: number; toUs: number }, top = 25): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  await mapProjectPositions(profile.nodes);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const selfUs = new Map<number, number>();
  let t = profile.startTime;
  let windowUs = 0;
  let samples = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    // A sample stands for the time until the next one.
    const duration = profile.timeDeltas[i + 1] ?? 0;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + duration);
    windowUs += duration;
    samples++;
  }

  const self = new Map<string, { area: string; us: number; callers: Map<string, number> }>();
  const areas = new Map<string, number>();
  const inclusive = new Map<string, { area: string; us: number }>();
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    if (node.callFrame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const label = frameLabel(node.callFrame);
    const area = areaOf(node.callFrame);
    const s = self.get(label) ?? { area, us: 0, callers: new Map<string, number>() };
    s.us += us;
    self.set(label, s);
    // The nearest caller with another label (V8 repeats a frame for recursion and inlining).
    for (let cur = parent.get(id); cur !== undefined; cur = parent.get(cur)) {
      const callerFrame = byId.get(cur)!.callFrame;
      if (callerFrame.functionName === '(root)') break;
      const callerLabel = frameLabel(callerFrame);
      if (callerLabel === label) continue;
      s.callers.set(callerLabel, (s.callers.get(callerLabel) ?? 0) + us);
      break;
    }
    areas.set(area, (areas.get(area) ?? 0) + us);
    // Inclusive: every distinct frame on the stack gets the sample once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur)!.callFrame;
      if (frame.functionName === '(root)') continue;
      const key = frameLabel(frame);
      if (seen.has(key)) continue;
      seen.add(key);
      const entry = inclusive.get(key) ?? { area: areaOf(frame), us: 0 };
      entry.us += us;
      inclusive.set(key, entry);
    }
  }
  const busyUs = Math.max(1, windowUs - idleUs);
  const share = (frame: string, area: string, us: number, callers?: Map<string, number>): FrameShare => {
    const top = callers ? [...callers].sort((a, b) => b[1] - a[1])[0] : undefined;
    return {
      frame, area, ms: Math.round(us / 100) / 10, percent: Math.round((1000 * us) / busyUs) / 10,
      ...(top ? { calledFrom: top[0], calledFromPercent: Math.round((100 * top[1]) / Math.max(1, us)) } : {}),
    };
  };
  return {
    windowMs: Math.round(windowUs / 1000),
    samples,
    idlePercent: Math.round((1000 * idleUs) / Math.max(1, windowUs)) / 10,
    selfTop: [...self].sort((a, b) => b[1].us - a[1].us).slice(0, top).map(([frame, v]) => share(frame, v.area, v.us, v.callers)),
    // Every area, not only the top: the report sums them by feature.
    areas: [...areas].sort((a, b) => b[1] - a[1]).map(([area, us]) => share(area, area, us)),
    inclusiveTop: [...inclusive].sort((a, b) => b[1].us - a[1].us).slice(0, top).map(([frame, v]) => share(frame, v.area, v.us)),
  };
}
