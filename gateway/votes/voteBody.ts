// The vote body: its schema and the hand check of the hot path. A module of its own, with nothing
// but zod and the uuid text checks: the request checks worker (gateway/requestChecks.worker.ts) loads it.
import { z } from 'zod';
import { isUuidText } from '../../infra/uuidText.ts';

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

const nilUuid = '00000000-0000-0000-0000-000000000000';
const maxUuid = 'ffffffff-ffff-ffff-ffff-ffffffffffff';

/**
 * `z.regexes.uuid().test(value)` by hand (the hot path checks three ids per vote): a uuid of
 * version 1-8 and variant 10xx in any case, or the nil or the max uuid (lower case only, as the
 * pattern has them). voteBody.test.ts holds the two equal.
 */
export function isSchemaUuid(value: string): boolean {
  if (isUuidText(value)) {
    const version = value.charCodeAt(14);
    const variant = value.charCodeAt(19) | 0x20; // lower case
    if (version >= 0x31 && version <= 0x38 && (variant === 0x38 || variant === 0x39 || variant === 0x61 || variant === 0x62)) return true;
  }
  return value === nilUuid || value === maxUuid;
}

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
  if (!isSchemaUuid(electionId) || !isSchemaUuid(candidateId) || !isSchemaUuid(userId)) return undefined;
  if (captchaToken === undefined) return keys === 3 && !Object.hasOwn(b, 'captchaToken') ? { electionId, candidateId, userId } : undefined;
  if (keys !== 4 || typeof captchaToken !== 'string' || captchaToken.length < 1 || captchaToken.length > captchaTokenCharsMax) return undefined;
  return { electionId, candidateId, userId, captchaToken };
}

