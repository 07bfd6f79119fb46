// The warnings of apps built in-process by the test harness, shown only when a test fails.
//
// The harness's apps used to log nothing (silent), so a test that failed on a 503 did not say
// what the node had warned about meanwhile ("answered before its shards could take votes", a
// failed reconcile). Printing every warning would bury the output: many tests drive failure
// paths on purpose. So each harness app logs warnings and errors into a bounded ring, and the
// setup file (infra/testing/failureLogsSetup.ts) prints, for a failed test, the lines logged
// while it ran.
import pino from 'pino';
import { redactedLogFields, type Logger } from '../logger.ts';

/** Lines kept per app: the latest ones, which are what a failing test needs. */
const linesKeptMax = 200;
/** A longer line (a stack, a big error object) is cut here. */
const lineCharsMax = 2_000;

export interface RecordedLog {
  readonly label: string;
  /** Lines logged so far, the oldest dropped past linesKeptMax; `dropped` counts those. */
  readonly lines: string[];
  dropped: number;
}

const live = new Set<RecordedLog>();

/** A logger at `warn` that keeps its lines in memory until `forget`. */
export function recordingLogger(label: string): { readonly log: Logger; readonly recorded: RecordedLog; forget(): void } {
  const recorded: RecordedLog = { label, lines: [], dropped: 0 };
  live.add(recorded);
  const log = pino({ level: 'warn', base: { app: label }, redact: redactedLogFields, timestamp: pino.stdTimeFunctions.isoTime }, {
    write(line: string) {
      recorded.lines.push(line.length > lineCharsMax ? `${line.slice(0, lineCharsMax)}…\n` : line);
      if (recorded.lines.length > linesKeptMax) {
        recorded.lines.shift();
        recorded.dropped++;
      }
    },
  });
  return { log, recorded, forget: () => live.delete(recorded) };
}

/** Where every live app's log stands now: pass it to `linesSince` after the test. */
export function logPositions(): Map<RecordedLog, number> {
  return new Map([...live].map((r) => [r, r.lines.length + r.dropped]));
}

/** The lines each app logged since `positions` (apps started since count from their start). */
export function linesSince(positions: Map<RecordedLog, number>): { label: string; lines: string[] }[] {
  const out: { label: string; lines: string[] }[] = [];
  for (const recorded of live) {
    const from = (positions.get(recorded) ?? 0) - recorded.dropped;
    const lines = recorded.lines.slice(Math.max(0, from));
    if (lines.length > 0) out.push({ label: recorded.label, lines });
  }
  return out;
}
