/// <reference lib="dom" />
// The ops page in a real headless Chromium (Debian's, driven by playwright-core, as the dashboard
// test does) against a real cluster: two node processes in two AZs on one Postgres. An admin signs
// in, sees the nodes by AZ with their shards and votes/s and the shard map; moves a shard, is told
// why a move is refused, balances and drains, and sees each operation listed with its progress
// until done — and the cluster (read from Postgres, not from the page) agrees.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPgClusterStore } from '../../persistence/clusterStore.ts';
import { call, register } from '../../infra/testing/appHarness.ts';
import { clusterAdmin, eventually, startTestCluster, type TestCluster } from '../../infra/testing/clusterHarness.ts';
import { createVoters } from '../../infra/testing/voters.ts';

const chromiumPath = process.env.LIVEVOTE_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(chromiumPath);
/** Generous: a busy 2-core machine runs other suites at the same time. Speed is measured in bench/. */
const uiDeadlineMs = 60_000;
const shardCount = 4;

let cluster: TestCluster;
let context: BrowserContext | undefined;
let profileDir: string;
let baseUrl: string;
let electionId: string;
let candidateIds: string[];

async function signIn(page: Page, who: { email: string; password: string }): Promise<void> {
  await page.waitForSelector('#signin-form', { state: 'visible', timeout: uiDeadlineMs });
  await page.fill('#email', who.email);
  await page.fill('#password', who.password);
  await page.click('#signin-button');
}

/** Every response of 400 or more and every error the page produced. */
function watchForFailures(page: Page): string[] {
  const failures: string[] = [];
  page.on('response', (response) => { if (response.status() >= 400) failures.push(`${response.status()} ${response.url()}`); });
  page.on('console', (message) => { if (message.type() === 'error') failures.push(`console: ${message.text()}`); });
  page.on('pageerror', (error) => failures.push(`pageerror: ${error.message}`));
  return failures;
}

const ownersInStore = async () => {
  const view = await createPgClusterStore(cluster.db.pool).readView();
  return new Map(view.shards.filter((s) => s.electionId === electionId).map((s) => [s.shard, s.ownerNodeId]));
};

const operationRow = (page: Page, kind: string) => page.locator(`#operations tr[data-kind="${kind}"]`).first();

async function untilOperationDone(page: Page, kind: string): Promise<string> {
  const row = operationRow(page, kind);
  await row.waitFor({ timeout: uiDeadlineMs });
  await expect.poll(async () => row.getAttribute('data-status'), { timeout: uiDeadlineMs, interval: 250 }).toMatch(/^(done|failed)$/);
  const status = (await row.getAttribute('data-status'))!;
  expect([status, await row.locator('.op-error').textContent()]).toEqual(['done', '']);
  return (await row.locator('.op-progress').textContent())!;
}

describe.skipIf(!haveChromium)(`ops page in headless Chromium${haveChromium ? '' : ` (SKIPPED: no Chromium at ${chromiumPath}; apt-get install chromium, or set LIVEVOTE_CHROMIUM)`}`, () => {
  beforeAll(async () => {
    // Automatic balancing off: every move in this test is one the page asked for.
    cluster = await startTestCluster({ LIVEVOTE_AUTO_BALANCE: 'off', LIVEVOTE_DEAD_AFTER_MS: '15000' });
    await Promise.all([cluster.startNode('node-a', 'a'), cluster.startNode('node-b', 'b')]);
    baseUrl = cluster.nodes.get('node-a')!.baseUrl;
    const token = await cluster.adminToken();
    const created = await call(baseUrl, 'POST', '/api/v1/admin/elections', {
      token, body: { title: 'Ops Night', candidates: [{ name: 'Ada' }, { name: 'Grace' }], shardCount },
    });
    electionId = created.body.electionId;
    candidateIds = created.body.candidates.map((c: { candidateId: string }) => c.candidateId);
    await call(baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token });
    await eventually(async () => ((await ownersInStore()).size === shardCount ? true : undefined), 60_000, 'every shard owned');
    profileDir = await mkdtemp(path.join(os.tmpdir(), 'lv-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
  }, 240_000);
  afterEach(async () => {
    for (const page of context?.pages() ?? []) await page.close();
    await context?.clearCookies();
  });
  afterAll(async () => {
    await context?.close();
    await cluster?.close();
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
  });

  it('shows the nodes by AZ with votes/s and the shard map; moves a shard, balances and drains, each operation listed until done', async () => {
    const page = await context!.newPage();
    const failures = watchForFailures(page);
    await page.goto(baseUrl + '/ops');
    await signIn(page, clusterAdmin);

    // The nodes, grouped by AZ, alive, with the shards the store says they own.
    await page.waitForSelector('#az-a #node-node-a[data-status="alive"]', { timeout: uiDeadlineMs });
    await page.waitForSelector('#az-b #node-node-b[data-status="alive"]', { timeout: uiDeadlineMs });
    expect(await page.textContent('#who')).toBe('signed in as admin');
    let owners = await ownersInStore();
    const ownedBy = (nodeId: string) => [...owners.values()].filter((owner) => owner === nodeId).length;
    await expect.poll(() => page.getAttribute('#node-node-a', 'data-shards'), { timeout: uiDeadlineMs }).toBe(String(ownedBy('node-a')));
    expect(await page.getAttribute('#node-node-b', 'data-shards')).toBe(String(ownedBy('node-b')));
    expect(await page.textContent('#node-node-a .heartbeat')).toMatch(/ s ago$/);

    // The shard map: every shard with its owner, under the election's title.
    for (const [shard, owner] of owners) expect(await page.getAttribute(`#shard-${electionId}-${shard}`, 'data-owner')).toBe(owner);
    expect(await page.textContent(`#election-${electionId} h3`)).toContain('Ops Night');

    // Votes/s: votes sent while the page polls show up as a rate on the nodes that own their shards.
    const voters = await createVoters(cluster.db.pool, 400, cluster.jwtSecret);
    let sent = 0;
    const sending = (async () => {
      while (sent < voters.length && (await page.locator('#azs .rate').allTextContents()).every((rate) => rate === '—' || rate === '0')) {
        const batch = voters.slice(sent, sent + 10);
        sent += batch.length;
        await Promise.all(batch.map((voter, i) => call(baseUrl, 'POST', '/api/v1/votes', {
          token: voter.token, body: { electionId, candidateId: candidateIds[i % 2], userId: voter.userId },
        })));
      }
    })();
    await expect.poll(async () => (await page.locator('#azs .rate').allTextContents()).some((rate) => /^[1-9][\d,]*$/.test(rate)), { timeout: uiDeadlineMs }).toBe(true);
    await sending;

    // Move: pick a shard of node-a on the map, send it to node-b.
    const shardOfA = [...owners].find(([, owner]) => owner === 'node-a')![0];
    await page.click(`#shard-${electionId}-${shardOfA}`);
    expect(await page.inputValue('#move-shard')).toBe(String(shardOfA));
    await page.selectOption('#move-node', 'node-b');
    await page.click('#move-button');
    expect(await untilOperationDone(page, 'move')).toBe('1/1 shards');
    expect(await page.textContent('#operations tr[data-kind="move"] .op-what')).toBe(`move shard ${shardOfA} of Ops Night to node-b`);
    await expect.poll(() => page.getAttribute(`#shard-${electionId}-${shardOfA}`, 'data-owner'), { timeout: uiDeadlineMs }).toBe('node-b');
    expect((await ownersInStore()).get(shardOfA)).toBe('node-b');

    // The same move again is refused, and the page says why.
    await page.click('#move-button');
    await expect.poll(() => page.textContent('#action-error'), { timeout: uiDeadlineMs }).toContain('shard_already_there');
    expect(await page.locator('#operations tr[data-kind="move"]').count()).toBe(1);

    // Balance: listed, and done.
    await page.click('#balance-button');
    await untilOperationDone(page, 'balance');
    expect(await page.textContent('#action-error')).toBe('');

    // Drain node-b: the button arms, then confirms; its shards all go to node-a.
    await page.click('#node-node-b button.drain');
    expect(await page.textContent('#node-node-b button.drain')).toBe('Confirm drain');
    await page.click('#node-node-b button.drain');
    await untilOperationDone(page, 'drain');
    await expect.poll(() => page.getAttribute('#node-node-b', 'data-shards'), { timeout: uiDeadlineMs }).toBe('0');
    await page.waitForSelector('#node-node-b .badge.draining', { timeout: uiDeadlineMs });
    owners = await ownersInStore();
    expect([...owners.values()]).toEqual(Array.from({ length: shardCount }, () => 'node-a'));
    for (const shard of owners.keys()) expect(await page.getAttribute(`#shard-${electionId}-${shard}`, 'data-owner')).toBe('node-a');
    // Undrain node-b: one click; the badge goes, the Drain button is back.
    await page.click('#node-node-b button.undrain');
    await untilOperationDone(page, 'undrain');
    await page.waitForSelector('#node-node-b button.drain', { timeout: uiDeadlineMs });
    expect(await page.locator('#node-node-b .badge.draining').count()).toBe(0);
    // Newest first: undrain, drain, balance, move.
    expect(await page.locator('#operations tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-kind')))).toEqual(['undrain', 'drain', 'balance', 'move']);
    if (process.env.LIVEVOTE_SCREENSHOT) await page.screenshot({ path: process.env.LIVEVOTE_SCREENSHOT, fullPage: true });

    // Nothing failed but the refused move and the first visit's attempt to resume a session it did not have.
    expect(failures.filter((failure) => !failure.startsWith('console:'))).toEqual([
      `401 ${baseUrl}/api/v1/auth/refresh`,
      `409 ${baseUrl}/api/v1/admin/cluster/shards/${electionId}/${shardOfA}/move`,
    ]);
    expect(failures.filter((failure) => failure.startsWith('console:') && !/40[19]/.test(failure))).toEqual([]);
  }, 300_000);

  it('tells a non-admin the page is for admins, and shows them nothing of the cluster', async () => {
    const viewer = { email: 'ops-viewer@example.com', password: 'viewer password 123' };
    await register(baseUrl, viewer.email, viewer.password);
    const page = await context!.newPage();
    await page.goto(baseUrl + '/ops');
    await signIn(page, viewer);
    await page.waitForFunction(() => (document.getElementById('signin-error')?.textContent ?? '').includes('for admins'), undefined, { timeout: uiDeadlineMs });
    expect(await page.isVisible('#nodes-panel')).toBe(false);
    expect(await page.isVisible('#operations-panel')).toBe(false);
    expect(await page.locator('#azs .node').count()).toBe(0);
  }, 120_000);
});
