/// <reference lib="dom" />
// The broadcaster dashboard in a real headless Chromium (Debian's, driven by playwright-core):
// sign in, pick the election, cast votes through the API, see the page move. How fast results
// reach a subscriber is measured by the benchmark (bench/RESULTS.md, fan-out), not here.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, login, register, startAppHarness, testAdmin, type AppHarness } from '../../infra/testing/appHarness.ts';
import { createVoters } from '../../infra/testing/voters.ts';

const chromiumPath = process.env.LIVEVOTE_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(chromiumPath);

let h: AppHarness;
let browser: Browser | undefined;
let profileDir: string;

describe.skipIf(!haveChromium)(`dashboard in headless Chromium${haveChromium ? '' : ` (SKIPPED: no Chromium at ${chromiumPath}; apt-get install chromium, or set LIVEVOTE_CHROMIUM)`}`, () => {
  beforeAll(async () => {
    h = await startAppHarness();
    profileDir = await mkdtemp(path.join(os.tmpdir(), 'lv-chromium-'));
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
  });

  it('shows live results that move as votes are cast', async () => {
    const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
    const broadcaster = await register(h.baseUrl, 'studio@example.com', 'studio password 123');
    await call(h.baseUrl, 'PUT', `/api/v1/users/${broadcaster.userId}/role`, { token: admin, body: { role: 'broadcaster' } });
    const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: 'Song Contest Final', candidates: [{ name: 'Ada' }, { name: 'Grace' }] } });
    const electionId = created.body.electionId as string;
    const [ada, grace] = created.body.candidates.map((c: { candidateId: string }) => c.candidateId) as [string, string];
    await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: admin });
    const voters = await createVoters(h.db.pool, 5, h.secrets.jwtSecret);

    const page = await browser!.newPage();
    page.setDefaultTimeout(60_000);
    await page.goto(h.baseUrl + '/');
    await page.fill('#email', 'studio@example.com');
    await page.fill('#password', 'studio password 123');
    await page.click('#signin-button');
    await page.waitForSelector('#stream-status.live', { timeout: 60_000 });
    expect(await page.textContent('#title')).toBe('Song Contest Final');
    expect(await page.textContent('#total')).toBe('0');

    const answers = await Promise.all(voters.map((v, i) => call(h.baseUrl, 'POST', '/api/v1/votes', {
      token: v.token, body: { electionId, candidateId: i < 3 ? ada : grace, userId: v.userId },
    })));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    await page.waitForFunction(() => document.getElementById('total')?.textContent === '5', undefined, { timeout: 60_000, polling: 10 });
    expect(await page.getAttribute(`#c-${ada}`, 'data-votes')).toBe('3');
    expect(await page.getAttribute(`#c-${grace}`, 'data-votes')).toBe('2');
    // Seen by a person: the bars exist and the leader's bar is full width.
    expect(await page.$eval(`#c-${ada} .fill`, (el) => (el as HTMLElement).style.width)).toBe('100%');
    if (process.env.LIVEVOTE_SCREENSHOT) await page.screenshot({ path: process.env.LIVEVOTE_SCREENSHOT });
  });

  it('shows a clear error on a wrong password', async () => {
    const page = await browser!.newPage();
    page.setDefaultTimeout(60_000);
    await page.goto(h.baseUrl + '/');
    await page.fill('#email', 'nobody@example.com');
    await page.fill('#password', 'wrong password here');
    await page.click('#signin-button');
    await page.waitForFunction(() => (document.getElementById('signin-error')?.textContent ?? '').length > 0, undefined, { timeout: 60_000 });
    expect(await page.textContent('#signin-error')).toContain('Email or password is wrong');
  });
});
