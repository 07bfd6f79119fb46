// The file votes.lua walks: one voter per fixed-width line, "<userId> <accessToken>", padded.
import { open } from 'node:fs/promises';
import type { TestVoter } from '../../infra/testing/voters.ts';

/** Our tokens are ~330 characters; 36 + 1 + token + newline must fit. */
export const voterLineWidth = 400;

/** What votes.lua takes (its header says what each is): the voters of a file written here. */
export interface VotesScriptOptions {
  readonly voterFile: string;
  readonly firstLine: number;
  readonly lineCount: number;
  readonly electionId: string;
  readonly candidateIds: readonly string[];
  /** After this, each connection parks once answered (the run's measured window). */
  readonly activeMs: number;
  /** The Host header: 127.0.0.1:<port>. */
  readonly port: number;
  /** Reuse lines once they run out (the ceiling, which stores nothing). */
  readonly wrap?: boolean;
  /** Each voter from an address of its own, in X-Forwarded-For, with a browser's User-Agent. */
  readonly forwardedFor?: boolean;
}

export function votesScriptArgs(o: VotesScriptOptions): string[] {
  return [
    o.voterFile, String(voterLineWidth), String(o.firstLine), String(o.lineCount), o.electionId, o.candidateIds.join(','),
    String(o.activeMs), o.wrap ? '1' : '0', `127.0.0.1:${o.port}`, o.forwardedFor ? '1' : '0',
  ];
}

export async function writeVoterFile(file: string, voters: readonly TestVoter[]): Promise<void> {
  // Access tokens: readable by this user only.
  const handle = await open(file, 'w', 0o600);
  try {
    const linesPerChunk = 10_000;
    for (let start = 0; start < voters.length; start += linesPerChunk) {
      const chunk = Buffer.alloc(Math.min(linesPerChunk, voters.length - start) * voterLineWidth, 0x20);
      for (let i = 0; i < chunk.length / voterLineWidth; i++) {
        const voter = voters[start + i]!;
        const text = `${voter.userId} ${voter.token}`;
        if (text.length > voterLineWidth - 1 || /\s/.test(voter.token)) throw new Error(`voter line too long or malformed: ${text.length} chars`);
        const offset = i * voterLineWidth;
        chunk.write(text, offset, 'latin1');
        chunk[offset + voterLineWidth - 1] = 0x0a;
      }
      await handle.write(chunk);
    }
  } finally {
    await handle.close();
  }
}
