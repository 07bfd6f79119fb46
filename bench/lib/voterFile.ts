// The file votes.lua walks: one voter per fixed-width line, "<userId> <accessToken>", padded.
import { open } from 'node:fs/promises';
import type { TestVoter } from '../../infra/testing/voters.ts';

/** Our tokens are ~330 characters; 36 + 1 + token + newline must fit. */
export const voterLineWidth = 400;

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
