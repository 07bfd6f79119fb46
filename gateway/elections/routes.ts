import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { defineRoute, type RouteDefinition } from '../http.ts';
import {
  findElection, insertElection, listElections, transitionElection,
  type ElectionRecord, type ElectionStatus,
} from '../../persistence/elections.ts';
import type { Pool } from '../../persistence/db.ts';
import type { ElectionRegistry } from './registry.ts';

export const candidatesMin = 2;
export const candidatesMax = 64;
export const shardCountMax = 1024;
export const shardCountDefault = 8;

const uuid = z.uuid();

export function electionIdParam(params: Readonly<Record<string, string>>): string {
  const parsed = uuid.safeParse(params.electionId);
  if (!parsed.success) throw new ApiError('validation_failed', 'electionId must be a UUID.', { issues: [{ path: 'params.electionId', message: 'must be a UUID' }] });
  return parsed.data;
}

/** Text stored as Postgres text, which cannot hold NUL: refused here as bad input, not a 500 there. */
const storedText = (charsMax: number) =>
  z.string().trim().min(1).max(charsMax).refine((text) => !text.includes('\u0000'), 'must not contain NUL (\\u0000) characters');

const createElectionBody = z.strictObject({
  title: storedText(200),
  candidates: z
    .array(z.strictObject({ name: storedText(200) }))
    .min(candidatesMin)
    .max(candidatesMax)
    .refine((list) => new Set(list.map((c) => c.name.toLowerCase())).size === list.length, 'candidate names must be unique'),
  shardCount: z.number().int().min(1).max(shardCountMax).default(shardCountDefault),
  captchaPolicy: z.enum(['off', 'always', 'on_risk']).default('off')
    .describe('CAPTCHA on votes: off, always, or only when an anti-fraud rule flags the vote'),
});

const candidateSchema = z.object({ candidateId: z.uuid(), name: z.string() });
const publicElectionSchema = z.object({
  electionId: z.uuid(),
  title: z.string(),
  status: z.enum(['open', 'closed']),
  captchaPolicy: z.enum(['off', 'always', 'on_risk']).describe('Whether votes need a captchaToken (GET /api/v1/captcha/challenge)'),
  candidates: z.array(candidateSchema),
});
const adminElectionSchema = z.object({
  electionId: z.uuid(),
  title: z.string(),
  status: z.enum(['draft', 'open', 'closed']),
  shardCount: z.number().int(),
  captchaPolicy: z.enum(['off', 'always', 'on_risk']),
  candidates: z.array(candidateSchema.extend({ candidateIndex: z.number().int() })),
  createdAt: z.string(),
  openedAt: z.string().nullable(),
  closedAt: z.string().nullable(),
});

function adminView(e: ElectionRecord): z.infer<typeof adminElectionSchema> {
  return {
    electionId: e.electionId,
    title: e.title,
    status: e.status,
    shardCount: e.shardCount,
    captchaPolicy: e.captchaPolicy,
    candidates: e.candidates.map((c) => ({ candidateId: c.candidateId, name: c.name, candidateIndex: c.candidateIndex })),
    createdAt: e.createdAt.toISOString(),
    openedAt: e.openedAt?.toISOString() ?? null,
    closedAt: e.closedAt?.toISOString() ?? null,
  };
}

function publicView(e: ElectionRecord): z.infer<typeof publicElectionSchema> {
  if (e.status === 'draft') throw new Error('drafts are never shown publicly');
  return {
    electionId: e.electionId,
    title: e.title,
    status: e.status,
    captchaPolicy: e.captchaPolicy,
    candidates: e.candidates.map((c) => ({ candidateId: c.candidateId, name: c.name })),
  };
}

export function electionRoutes(deps: { pool: Pool; registry: ElectionRegistry }): RouteDefinition<unknown, unknown>[] {
  const { pool, registry } = deps;

  const transition = async (electionId: string, from: ElectionStatus, to: ElectionStatus) => {
    const moved = await transitionElection(pool, electionId, from, to);
    if (moved) return { json: adminView(await registry.publish(moved)) };
    const current = await findElection(pool, electionId);
    if (!current) throw new ApiError('election_not_found');
    throw new ApiError('invalid_election_transition', `The election is ${current.status}; only a ${from} election can become ${to}.`);
  };

  return [
    defineRoute({
      method: 'POST', path: '/api/v1/admin/elections', tag: 'elections', auth: ['admin'],
      summary: 'Create an election (draft) with 2..64 candidates and a shard count.',
      body: createElectionBody,
      errors: ['account_erased'],
      responses: { 201: { description: 'Created', schema: adminElectionSchema } },
      handle: async ({ body, principal }) => {
        const created = await insertElection(pool, {
          electionId: randomUUID(),
          title: body.title,
          shardCount: body.shardCount,
          captchaPolicy: body.captchaPolicy,
          createdBy: principal!.userId,
          candidates: body.candidates.map((c, i) => ({ candidateId: randomUUID(), candidateIndex: i, name: c.name })),
        });
        if (!created) throw new ApiError('account_erased');
        return { status: 201, json: adminView(await registry.publish(created)) };
      },
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/admin/elections', tag: 'elections', auth: ['admin'],
      summary: 'List every election, drafts included.',
      responses: { 200: { description: 'Elections, newest first', schema: z.object({ elections: z.array(adminElectionSchema) }) } },
      handle: async () => ({ json: { elections: (await listElections(pool)).map(adminView) } }),
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/admin/elections/{electionId}', tag: 'elections', auth: ['admin'],
      summary: 'One election with its shard count and timestamps.',
      errors: ['election_not_found', 'validation_failed'],
      responses: { 200: { description: 'The election', schema: adminElectionSchema } },
      handle: async ({ params }) => {
        const election = await findElection(pool, electionIdParam(params));
        if (!election) throw new ApiError('election_not_found');
        return { json: adminView(election) };
      },
    }),
    defineRoute({
      method: 'POST', path: '/api/v1/admin/elections/{electionId}/open', tag: 'elections', auth: ['admin'],
      summary: 'Open a draft election for voting.',
      errors: ['election_not_found', 'invalid_election_transition', 'validation_failed'],
      responses: { 200: { description: 'The election, now open', schema: adminElectionSchema } },
      handle: ({ params }) => transition(electionIdParam(params), 'draft', 'open'),
    }),
    defineRoute({
      method: 'POST', path: '/api/v1/admin/elections/{electionId}/close', tag: 'elections', auth: ['admin'],
      summary: 'Close an open election: no further votes are accepted.',
      errors: ['election_not_found', 'invalid_election_transition', 'validation_failed'],
      responses: { 200: { description: 'The election, now closed', schema: adminElectionSchema } },
      handle: ({ params }) => transition(electionIdParam(params), 'open', 'closed'),
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/elections', tag: 'elections', auth: 'public',
      summary: 'Open and closed elections (never drafts), for viewers and the dashboard.',
      responses: { 200: { description: 'Elections', schema: z.object({ elections: z.array(publicElectionSchema) }) } },
      handle: () => ({
        json: { elections: registry.all().filter((e) => e.status !== 'draft').sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime()).map(publicView) },
      }),
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/elections/{electionId}', tag: 'elections', auth: 'public',
      summary: 'Public read of an election: title, candidates, status.',
      errors: ['election_not_found', 'validation_failed'],
      responses: { 200: { description: 'The election', schema: publicElectionSchema } },
      handle: ({ params }) => {
        const election = registry.get(electionIdParam(params));
        if (!election || election.status === 'draft') throw new ApiError('election_not_found');
        return { json: publicView(election) };
      },
    }),
  ];
}
