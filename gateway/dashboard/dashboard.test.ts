/// <reference lib="dom" />
// The broadcaster dashboard in a real headless Chromium (Debian's, driven by playwright-core, a
// fresh profile directory): sign in, reload and still be live, see the bars move after votes;
// sign out, reload and be signed out; a viewer is told they are not a broadcaster.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { call, login, register, startAppHarness, testAdmin, type AppHarness } from '../../infra/testing/appHarness.ts';
import { createVoters } from '../../infra/testing/voters.ts';

const chromiumPath = process.env.LIVEVOTE_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(chromiumPath);
/** Generous: a busy 2-core machine runs other suites at the same time. Speed is measured in bench/. */
const uiDeadlineMs = 15_000;

let h: AppHarness;
let context: BrowserContext | undefined;
let profileDir: string;

const broadcaster = { email: 'studio@example.com', password: 'studio password 123' };
const viewer = { email: 'couch@example.com', password: 'couch password 123' };
let broadcasterId: string;
let viewerId: string;
let electionId: string;
let candidateIds: [string, string];

async function signIn(page: Page, who: { email: string; password: string }): Promise<void> {
  await page.waitForSelector('#signin-form', { state: 'visible', timeout: uiDeadlineMs });
  await page.fill('#email', who.email);
  await page.fill('#password', who.password);
  await page.click('#signin-button');
}

async function refreshCookie(): Promise<{ value: string; httpOnly: boolean; sameSite: string; path: string } | undefined> {
  // Asked for without a URL: the cookie is scoped to the refresh path, not to the page.
  return (await context!.cookies()).find((cookie) => cookie.name === 'livevote_refresh');
}

async function liveSessionsOf(userId: string): Promise<number> {
  const result = await h.db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL', [userId]);
  return result.rows[0]!.n;
}

/** Every response of 400 or more and every console error the page produced. */
function watchForFailures(page: Page): string[] {
  const failures: string[] = [];
  page.on('response', (response) => { if (response.status() >= 400) failures.push(`${response.status()} ${response.url()}`); });
  page.on('console', (message) => { if (message.type() === 'error') failures.push(`console: ${message.text()}`); });
  page.on('pageerror', (error) => failures.push(`pageerror: ${error.message}`));
  return failures;
}

describe.skipIf(!haveChromium)(`dashboard in headless Chromium${haveChromium ? '' : ` (SKIPPED: no Chromium at ${chromiumPath}; apt-get install chromium, or set LIVEVOTE_CHROMIUM)`}`, () => {
  beforeAll(async () => {
    h = await startAppHarness();
    profileDir = await mkdtemp(path.join(os.tmpdir(), 'lv-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
    // Registering starts a session; it is ended here so that the only sessions are the dashboard's.
    const studio = await register(h.baseUrl, broadcaster.email, broadcaster.password);
    const couch = await register(h.baseUrl, viewer.email, viewer.password);
    for (const registered of [studio, couch]) await call(h.baseUrl, 'POST', '/api/v1/auth/logout', { token: registered.accessToken, body: {} });
    [broadcasterId, viewerId] = [studio.userId, couch.userId];
    await call(h.baseUrl, 'PUT', `/api/v1/users/${broadcasterId}/role`, { token: admin, body: { role: 'broadcaster' } });
    const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: 'Song Contest Final', candidates: [{ name: 'Ada' }, { name: 'Grace' }] } });
    electionId = created.body.electionId as string;
    candidateIds = created.body.candidates.map((c: { candidateId: string }) => c.candidateId) as [string, string];
    await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: admin });
  }, 180_000);
  afterEach(async () => {
    for (const page of context?.pages() ?? []) await page.close();
    await context?.clearCookies();
  });
  afterAll(async () => {
    await context?.close();
    await h?.close();
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
  });

  it('signs in, stays live across a reload with the refresh token out of script reach, and moves the bars after votes', async () => {
    const page = await context!.newPage();
    const failures = watchForFailures(page);
    await page.goto(h.baseUrl + '/');
    await signIn(page, broadcaster);
    await page.waitForSelector('#stream-status.live', { timeout: uiDeadlineMs });
    expect(await page.textContent('#title')).toBe('Song Contest Final');
    expect(await page.textContent('#who')).toBe('signed in as broadcaster');

    // The refresh token: an HttpOnly, SameSite=Strict cookie for the refresh route only; nothing
    // a script can read holds a token.
    const first = await refreshCookie();
    expect(first).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/api/v1/auth/refresh' });
    expect(await page.evaluate(() => [document.cookie, localStorage.length, sessionStorage.length])).toEqual(['', 0, 0]);

    await page.reload();
    await page.waitForSelector('#stream-status.live', { timeout: uiDeadlineMs });
    expect(await page.isVisible('#signin-form')).toBe(false);
    expect(await page.textContent('#title')).toBe('Song Contest Final');
    const rotated = await refreshCookie();
    expect(rotated?.value).toMatch(/^[\w-]{43}$/);
    expect(rotated?.value).not.toBe(first?.value);
    expect(await liveSessionsOf(broadcasterId)).toBe(1); // one session, its token rotated

    const voters = await createVoters(h.db.pool, 5, h.secrets.jwtSecret);
    const totalBefore = Number(await page.textContent('#total'));
    const answers = await Promise.all(voters.map((v, i) => call(h.baseUrl, 'POST', '/api/v1/votes', {
      token: v.token, body: { electionId, candidateId: i < 3 ? candidateIds[0] : candidateIds[1], userId: v.userId },
    })));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    await page.waitForFunction((expected) => document.getElementById('total')?.textContent === expected, String(totalBefore + 5), { timeout: uiDeadlineMs });
    expect(await page.getAttribute(`#c-${candidateIds[0]}`, 'data-votes')).toBe('3');
    expect(await page.getAttribute(`#c-${candidateIds[1]}`, 'data-votes')).toBe('2');
    // Seen by a person: the bars exist and the leader's bar is full width.
    expect(await page.$eval(`#c-${candidateIds[0]} .fill`, (el) => (el as HTMLElement).style.width)).toBe('100%');
    if (process.env.LIVEVOTE_SCREENSHOT) await page.screenshot({ path: process.env.LIVEVOTE_SCREENSHOT });

    // The icon the page links is served (no favicon 404), and nothing on the page failed.
    expect(await page.evaluate(async () => {
      const response = await fetch((document.querySelector('link[rel=icon]') as HTMLLinkElement).href);
      return [response.status, response.headers.get('content-type')];
    })).toEqual([200, 'image/svg+xml']);
    expect((await call(h.baseUrl, 'GET', '/favicon.ico')).status).toBe(200);
    // The one failure: on the first visit the page tried to resume a session it did not have
    // (Chromium logs that 401 to the console too).
    expect(failures.filter((failure) => !failure.startsWith('console:'))).toEqual([`401 ${h.baseUrl}/api/v1/auth/refresh`]);
    expect(failures.filter((failure) => failure.startsWith('console:') && !failure.includes('401'))).toEqual([]);
  }, 60_000);

  it('signs out: the session is revoked server-side, and after a reload the page is signed out', async () => {
    const page = await context!.newPage();
    await page.goto(h.baseUrl + '/');
    await signIn(page, broadcaster);
    await page.waitForSelector('#stream-status.live', { timeout: uiDeadlineMs });
    expect(await refreshCookie()).toBeDefined();
    const liveBefore = await liveSessionsOf(broadcasterId);

    await page.click('#signout-button');
    await page.waitForSelector('#signin-form', { state: 'visible', timeout: uiDeadlineMs });
    expect(await page.textContent('#signin-notice')).toBe('Signed out.');
    expect(await page.isVisible('#results')).toBe(false);
    expect(await refreshCookie()).toBeUndefined();
    expect(await liveSessionsOf(broadcasterId)).toBe(liveBefore - 1);

    await page.reload();
    await page.waitForSelector('#signin-form', { state: 'visible', timeout: uiDeadlineMs });
    expect(await page.isVisible('#results')).toBe(false);
    expect(await page.isVisible('#signout-button')).toBe(false);
  }, 60_000);

  it('tells a viewer they are not a broadcaster, and leaves them no session', async () => {
    const page = await context!.newPage();
    await page.goto(h.baseUrl + '/');
    await signIn(page, viewer);
    await page.waitForFunction(() => (document.getElementById('signin-error')?.textContent ?? '').includes('not a broadcaster'), undefined, { timeout: uiDeadlineMs });
    expect(await page.textContent('#signin-error')).toContain('the dashboard is for broadcasters and admins');
    expect(await page.isVisible('#picker')).toBe(false);
    expect(await page.isVisible('#results')).toBe(false);
    expect(await refreshCookie()).toBeUndefined();
    // Its sign-in started a session (registration's was the first), which is revoked already.
    const families = await h.db.pool.query('SELECT DISTINCT family_id FROM refresh_tokens WHERE user_id = $1', [viewerId]);
    expect(families.rowCount).toBe(2);
    expect(await liveSessionsOf(viewerId)).toBe(0);

    await page.reload();
    await page.waitForSelector('#signin-form', { state: 'visible', timeout: uiDeadlineMs });
    expect(await page.isVisible('#picker')).toBe(false);
  }, 60_000);

  it('renews the access token through the refresh route a minute before it expires (the clock moved on)', async () => {
    // Installed for the whole context, so this test runs last; time still flows after install.
    await context!.clock.install();
    const page = await context!.newPage();
    await page.goto(h.baseUrl + '/');
    await signIn(page, broadcaster);
    await page.waitForSelector('#stream-status.live', { timeout: uiDeadlineMs });
    const before = (await refreshCookie())?.value;
    expect(before).toBeDefined();
    await page.clock.fastForward('14:01');
    await expect.poll(async () => (await refreshCookie())?.value, { timeout: uiDeadlineMs }).not.toBe(before);
    expect(await page.isVisible('#stream-status.live')).toBe(true);
    expect(await page.textContent('#who')).toBe('signed in as broadcaster');
  }, 60_000);

  it('shows a clear error on a wrong password', async () => {
    const page = await context!.newPage();
    await page.goto(h.baseUrl + '/');
    await signIn(page, { email: 'nobody@example.com', password: 'wrong password here' });
    await page.waitForFunction(() => (document.getElementById('signin-error')?.textContent ?? '').length > 0, undefined, { timeout: uiDeadlineMs });
    expect(await page.textContent('#signin-error')).toContain('Email or password is wrong');
  }, 60_000);
});
