// The vote body: its schema and the hand check of the hot path. A module of its own, with nothing
// but zod: the request checks worker (gateway/requestChecks.worker.ts) loads it.
import { z } from 'zod';

/** Room for a provider CAPTCHA token (Turnstile's run to ~2 KB) plus the ids. */
export const voteBodyBytesMax = 8 * 1024;

const captchaTokenCharsMax = 4096;

export const voteBody = z.strictObject({
  electionId: z.uuid(),
  candidateId: z.uuid(),
  userId: z.uuid(),
  captchaToken: z.string().min(1).max(captchaTokenCharsMax).optional(),
});

export type VoteBody = z.infer<typeof voteBody>;

/** z.uuid()'s own pattern: the hand check below accepts exactly the ids the schema does. */
const schemaUuidPattern = z.regexes.uuid();

/**
 * The vote body's hot path (RouteDefinition.bodyFastPath): a well-formed body as `voteBody`
 * returns it, without zod's machinery (~3% of a vote's CPU). Anything else answers undefined and
 * the schema decides, so malformed bodies get the schema's error details, word for word.
 */
export function checkVoteBody(json: unknown): VoteBody | undefined {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined;
  const b = json as Record<string, unknown>;
  let keys = 0;
  for (const key in b) if (Object.hasOwn(b, key)) keys++;
  const { electionId, candidateId, userId, captchaToken } = b;
  if (typeof electionId !== 'string' || typeof candidateId !== 'string' || typeof userId !== 'string') return undefined;
  if (!schemaUuidPattern.test(electionId) || !schemaUuidPattern.test(candidateId) || !schemaUuidPattern.test(userId)) return undefined;
  if (captchaToken === undefined) return keys === 3 && !Object.hasOwn(b, 'captchaToken') ? { electionId, candidateId, userId } : undefined;
  if (keys !== 4 || typeof captchaToken !== 'string' || captchaToken.length < 1 || captchaToken.length > captchaTokenCharsMax) return undefined;
  return { electionId, candidateId, userId, captchaToken };
}

