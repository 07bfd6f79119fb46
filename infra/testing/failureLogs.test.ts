import { describe, expect, it } from 'vitest';
import { linesSince, logPositions, recordingLogger } from './failureLogs.ts';

describe('failure logs (warnings printed for a failed test)', () => {
  it('keeps warnings and errors, not info, and gives the lines logged since a position', () => {
    const { log, forget } = recordingLogger('app one');
    try {
      log.warn('before the test');
      const positions = logPositions();
      log.info('not kept');
      log.warn({ shard: 3 }, 'answered before its shards could take votes');
      log.error('an error');
      const since = linesSince(positions).find((l) => l.label === 'app one');
      expect(since?.lines.map((line) => JSON.parse(line).msg)).toEqual(['answered before its shards could take votes', 'an error']);
      expect(JSON.parse(since!.lines[0]!).shard).toBe(3);
    } finally {
      forget();
    }
  });

  it('is bounded: past 200 lines the oldest are dropped, and positions stay right', () => {
    const { log, recorded, forget } = recordingLogger('app two');
    try {
      for (let i = 0; i < 250; i++) log.warn(`line ${i}`);
      expect(recorded.lines).toHaveLength(200);
      expect(recorded.dropped).toBe(50);
      const positions = logPositions();
      for (let i = 250; i < 260; i++) log.warn(`line ${i}`);
      const since = linesSince(positions).find((l) => l.label === 'app two');
      expect(since?.lines.map((line) => JSON.parse(line).msg)).toEqual(Array.from({ length: 10 }, (_, i) => `line ${250 + i}`));
    } finally {
      forget();
    }
  });

  it('redacts what could carry a secret, as the production logger does', () => {
    const { log, recorded, forget } = recordingLogger('app four');
    try {
      log.warn({ authorization: 'Bearer secret.token.here', password: 'hunter2hunter2' }, 'refused');
      expect(recorded.lines.join('')).not.toMatch(/secret\.token|hunter2/);
    } finally {
      forget();
    }
  });

  it('forgets an app once it is closed', () => {
    const { log, forget } = recordingLogger('app three');
    const positions = logPositions();
    log.warn('x');
    forget();
    expect(linesSince(positions).some((l) => l.label === 'app three')).toBe(false);
  });
});
