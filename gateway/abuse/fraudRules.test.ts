import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  defaultFraudRulesConfig,
  emailDomainOf,
  FraudRules,
  FraudStats,
  isDisposableEmail,
  SlidingWindowCounter,
  userAgentHits,
  verdictOf,
  type FraudRulesConfig,
} from './fraudRules.ts';
import { builtInDisposableEmailDomains } from './disposableEmailDomains.ts';

const browser = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';
const t0 = 1_700_000_040_000;

function rules(overrides: Partial<FraudRulesConfig> = {}, stats?: FraudStats): FraudRules {
  return new FraudRules({ ...defaultFraudRulesConfig, ...overrides }, stats);
}

function registration(n: number, ip = '198.51.100.7', networkKey = '198.51.100.0/24') {
  return { ip, networkKey, email: `viewer${n}@example.com`, userAgent: browser };
}

describe('verdictOf', () => {
  it('is the strongest action among the hits', () => {
    expect(verdictOf([])).toEqual({ verdict: 'allow', hits: [] });
    expect(verdictOf([{ rule: 'empty_user_agent', action: 'flag' }]).verdict).toBe('flag');
    expect(verdictOf([{ rule: 'empty_user_agent', action: 'flag' }, { rule: 'disposable_email', action: 'reject' }]).verdict).toBe('reject');
  });
});

describe('SlidingWindowCounter', () => {
  it('counts within the window and forgets what slid out', () => {
    const counter = new SlidingWindowCounter(60_000, 100);
    const start = 1_700_000_000_000 - (1_700_000_000_000 % 60_000);
    for (let i = 1; i <= 5; i++) expect(counter.add('k', start + i)).toBe(i);
    // Half-way into the next window, half of the previous window's 5 still count.
    expect(counter.add('k', start + 90_000)).toBe(1 + Math.floor(5 * 0.5));
    // Two windows later nothing is left.
    expect(counter.add('k', start + 200_000)).toBe(1);
  });

  it('never weighs the previous window above 1 when the clock steps back', () => {
    const counter = new SlidingWindowCounter(1000, 10);
    for (let i = 0; i < 4; i++) counter.add('k', 10_500);
    counter.add('k', 11_100);
    expect(counter.add('k', 10_900)).toBeLessThanOrEqual(6);
  });

  it('keeps at most keysMax keys, counting live keys dropped early', () => {
    const counter = new SlidingWindowCounter(60_000, 10);
    for (let i = 0; i < 100; i++) counter.add(`k${i}`, t0);
    expect(counter.size).toBe(10);
    expect(counter.evictedCount).toBe(90);
    // The newest key is never the one dropped to make room for itself.
    expect(counter.add('k99', t0)).toBe(2);
  });

  it('sweeps keys whose windows have passed as traffic flows', () => {
    const counter = new SlidingWindowCounter(1000, 1000);
    for (let i = 0; i < 8; i++) counter.add(`old${i}`, t0);
    for (let i = 0; i < 10; i++) counter.add('busy', t0 + 5000);
    expect(counter.size).toBe(1);
    expect(counter.evictedCount).toBe(0);
  });

  it('when full, drops a dead key rather than a live one', () => {
    const counter = new SlidingWindowCounter(1000, 8);
    for (let i = 0; i < 7; i++) counter.add(`live${i}`, t0 + 5000);
    counter.add('dead', t0);
    counter.add('new', t0 + 5000);
    expect(counter.size).toBeLessThanOrEqual(8);
    expect(counter.evictedCount).toBe(0);
    expect(counter.add('live0', t0 + 5000)).toBe(2);
  });
});

describe('registration velocity', () => {
  it('flags an IP above its count (default: flag, for households and CGNAT)', () => {
    const fraud = rules({ registrationPerIp: { action: 'flag', countMax: 3, windowMs: 3_600_000 } });
    for (let n = 1; n <= 3; n++) expect(fraud.evaluateRegistration(registration(n), t0 + n).verdict).toBe('allow');
    expect(fraud.evaluateRegistration(registration(4), t0 + 4)).toEqual({ verdict: 'flag', hits: [{ rule: 'registration_velocity_ip', action: 'flag' }] });
    // Another IP of another network is not affected.
    expect(fraud.evaluateRegistration(registration(5, '203.0.113.1', '203.0.113.0/24'), t0 + 5).verdict).toBe('allow');
  });

  it('rejects many accounts from one network spread over many IPs', () => {
    const fraud = rules({ registrationPerNetwork: { action: 'reject', countMax: 20, windowMs: 3_600_000 } });
    const verdicts = Array.from({ length: 30 }, (_, n) => fraud.evaluateRegistration(registration(n, `198.51.100.${n + 1}`), t0 + n).verdict);
    expect(verdicts.slice(0, 20).every((v) => v === 'allow')).toBe(true);
    expect(verdicts.slice(20).every((v) => v === 'reject')).toBe(true);
    expect(fraud.stats.totals()).toEqual({ registration_velocity_network: { flagged: 0, rejected: 10 } });
  });

  it('forgets registrations once the window has passed', () => {
    const fraud = rules({ registrationPerIp: { action: 'reject', countMax: 1, windowMs: 60_000 } });
    expect(fraud.evaluateRegistration(registration(1), t0).verdict).toBe('allow');
    expect(fraud.evaluateRegistration(registration(2), t0 + 1).verdict).toBe('reject');
    expect(fraud.evaluateRegistration(registration(3), t0 + 180_000).verdict).toBe('allow');
  });

  it('does nothing when off', () => {
    const fraud = rules({ registrationPerIp: { action: 'off', countMax: 0, windowMs: 1000 }, registrationPerNetwork: { action: 'off', countMax: 0, windowMs: 1000 } });
    for (let n = 0; n < 50; n++) expect(fraud.evaluateRegistration(registration(n), t0).verdict).toBe('allow');
  });
});

describe('disposable email', () => {
  const domains = new Set(builtInDisposableEmailDomains);

  it('ships a modest list of well-known domains', () => {
    expect(builtInDisposableEmailDomains.length).toBeGreaterThanOrEqual(50);
    expect(builtInDisposableEmailDomains.length).toBeLessThanOrEqual(100);
    expect(new Set(builtInDisposableEmailDomains).size).toBe(builtInDisposableEmailDomains.length);
    for (const domain of builtInDisposableEmailDomains) expect(domain).toBe(domain.toLowerCase());
  });

  it('matches the domain, its subdomains, in any case, and nothing else', () => {
    expect(isDisposableEmail('bot@mailinator.com', domains)).toBe(true);
    expect(isDisposableEmail('Bot@MAILINATOR.COM.', domains)).toBe(true);
    expect(isDisposableEmail('bot@eu.mailinator.com', domains)).toBe(true);
    expect(isDisposableEmail('viewer@gmail.com', domains)).toBe(false);
    expect(isDisposableEmail('viewer@notmailinator.com', domains)).toBe(false);
    expect(isDisposableEmail('no-at-sign', domains)).toBe(false);
    expect(emailDomainOf('a@b@Example.org')).toBe('example.org');
  });

  it('rejects by default and takes extra domains from config', () => {
    const fraud = rules({ disposableEmail: { action: 'reject', extraDomains: ['Throwaway.Example'] } });
    expect(fraud.evaluateRegistration({ ...registration(1), email: 'x@yopmail.com' }, t0)).toEqual({ verdict: 'reject', hits: [{ rule: 'disposable_email', action: 'reject' }] });
    expect(fraud.evaluateRegistration({ ...registration(2), email: 'x@throwaway.example' }, t0).verdict).toBe('reject');
    expect(fraud.evaluateRegistration({ ...registration(3), email: 'x@example.com' }, t0).verdict).toBe('allow');
  });

  it('can flag instead', () => {
    const fraud = rules({ disposableEmail: { action: 'flag', extraDomains: [] } });
    expect(fraud.evaluateRegistration({ ...registration(1), email: 'x@yopmail.com' }, t0).verdict).toBe('flag');
  });
});

describe('user-agent rules', () => {
  it.each([
    ['curl/8.5.0', 'automation_user_agent'],
    ['python-requests/2.31.0', 'automation_user_agent'],
    ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36', 'automation_user_agent'],
    ['Go-http-client/2.0', 'automation_user_agent'],
    ['', 'empty_user_agent'],
    ['   ', 'empty_user_agent'],
  ])('%j fires %s', (userAgent, rule) => {
    expect(userAgentHits(userAgent, defaultFraudRulesConfig).map((h) => h.rule)).toEqual([rule]);
  });

  it('leaves real browsers and apps alone', () => {
    expect(userAgentHits(browser, defaultFraudRulesConfig)).toEqual([]);
    expect(userAgentHits('LiveVoteApp/3.2 (iPhone; iOS 17.5)', defaultFraudRulesConfig)).toEqual([]);
  });

  it('takes its action and signatures from config', () => {
    const config = {
      emptyUserAgent: { action: 'off' as const },
      automationUserAgent: { action: 'flag' as const, signatures: ['votebot'] },
    };
    expect(userAgentHits('', config)).toEqual([]);
    expect(userAgentHits('curl/8.5.0', config)).toEqual([]);
    expect(userAgentHits('VoteBot/1.0', config)).toEqual([{ rule: 'automation_user_agent', action: 'flag' }]);
  });

  it('applies on login and on vote, with the default actions', () => {
    const fraud = rules();
    expect(fraud.evaluateLogin({ userAgent: 'curl/8.5.0' }).verdict).toBe('flag');
    expect(fraud.evaluateLogin({ userAgent: '' }).verdict).toBe('flag');
    expect(fraud.evaluateLogin({ userAgent: browser }).verdict).toBe('allow');
    expect(fraud.evaluateVote({ electionId: 'e1', candidate: 0, networkKey: 'n', userAgent: 'python-requests/2.31' }, t0).verdict).toBe('flag');
  });
});

describe('vote bursts for one candidate from one network', () => {
  const burst = { action: 'flag' as const, countMax: 5, windowMs: 60_000 };

  it('fires above countMax votes for one candidate from one network in the window', () => {
    const fraud = rules({ voteBurst: burst });
    const vote = { electionId: 'e1', candidate: 'c1', networkKey: '198.51.100.0/24', userAgent: browser };
    for (let i = 0; i < 5; i++) expect(fraud.evaluateVote(vote, t0 + i).verdict).toBe('allow');
    expect(fraud.evaluateVote(vote, t0 + 5)).toEqual({ verdict: 'flag', hits: [{ rule: 'vote_burst_network', action: 'flag' }] });
  });

  it('counts each candidate, network and election apart', () => {
    const fraud = rules({ voteBurst: burst });
    const base = { electionId: 'e1', candidate: 'c1', networkKey: '198.51.100.0/24', userAgent: browser };
    for (let i = 0; i < 5; i++) fraud.evaluateVote(base, t0);
    expect(fraud.evaluateVote({ ...base, candidate: 'c2' }, t0).verdict).toBe('allow');
    expect(fraud.evaluateVote({ ...base, networkKey: '203.0.113.0/24' }, t0).verdict).toBe('allow');
    expect(fraud.evaluateVote({ ...base, electionId: 'e2' }, t0).verdict).toBe('allow');
    expect(fraud.evaluateVote(base, t0).verdict).toBe('flag');
  });

  it('counts elections apart past the short names it keeps for them, and starts over there', () => {
    const fraud = rules({ voteBurst: burst });
    const vote = (electionId: string) => ({ electionId, candidate: 'c1', networkKey: '198.51.100.0/24', userAgent: browser });
    for (let i = 0; i < 5; i++) fraud.evaluateVote(vote('first'), t0);
    expect(fraud.evaluateVote(vote('first'), t0).verdict).toBe('flag');
    // 1,024 other elections fill the table of short names: the first one's count starts over.
    for (let e = 0; e < 1024; e++) expect(fraud.evaluateVote(vote(`other${e}`), t0).verdict).toBe('allow');
    expect(fraud.evaluateVote(vote('first'), t0).verdict).toBe('allow');
  });

  it('rejects when configured to, and quietens once the window has passed', () => {
    const fraud = rules({ voteBurst: { ...burst, action: 'reject' } });
    const vote = { electionId: 'e1', candidate: 3, networkKey: '2001:db8:1:2::/64', userAgent: browser };
    for (let i = 0; i < 5; i++) fraud.evaluateVote(vote, t0);
    expect(fraud.evaluateVote(vote, t0).verdict).toBe('reject');
    expect(fraud.evaluateVote(vote, t0 + 180_000).verdict).toBe('allow');
  });

  it('returns the one shared allow verdict when nothing fires (no allocation per vote)', () => {
    const fraud = rules();
    const vote = { electionId: 'e1', candidate: 'c1', networkKey: 'n', userAgent: browser };
    expect(fraud.evaluateVote(vote, t0)).toBe(fraud.evaluateVote({ ...vote, candidate: 'c2' }, t0));
  });
});

describe('FraudStats', () => {
  it('counts hits by rule, by election for votes, and in Prometheus', async () => {
    const registry = new Registry();
    const stats = new FraudStats({ registry });
    const fraud = rules({ voteBurst: { action: 'reject', countMax: 1, windowMs: 60_000 } }, stats);
    const vote = { electionId: 'e1', candidate: 'c1', networkKey: 'n', userAgent: browser };
    fraud.evaluateVote(vote, t0);
    fraud.evaluateVote(vote, t0);
    fraud.evaluateVote(vote, t0);
    fraud.evaluateVote({ ...vote, electionId: 'e2', userAgent: '' }, t0);
    fraud.evaluateRegistration({ ...registration(1), email: 'x@yopmail.com' }, t0);

    expect(stats.forElection('e1')).toEqual({ vote_burst_network: { flagged: 0, rejected: 2 } });
    expect(stats.forElection('e2')).toEqual({ empty_user_agent: { flagged: 1, rejected: 0 } });
    expect(stats.forElection('unknown')).toEqual({});
    expect(stats.forElection('')).toEqual({ disposable_email: { flagged: 0, rejected: 1 } });
    expect(stats.totals()).toEqual({
      vote_burst_network: { flagged: 0, rejected: 2 },
      empty_user_agent: { flagged: 1, rejected: 0 },
      disposable_email: { flagged: 0, rejected: 1 },
    });
    const text = await registry.metrics();
    expect(text).toContain('livevote_fraud_rule_hits_total{rule="vote_burst_network",action="reject"} 2');
    expect(text).toContain('livevote_fraud_rule_hits_total{rule="disposable_email",action="reject"} 1');
  });

  it('hands out deltas once, and takes them back when storing failed', () => {
    const stats = new FraudStats();
    stats.record([{ rule: 'vote_burst_network', action: 'flag' }], 'e1');
    stats.record([{ rule: 'vote_burst_network', action: 'flag' }], 'e1');
    stats.record([{ rule: 'disposable_email', action: 'reject' }]);
    const deltas = stats.takeDeltas();
    expect(deltas).toEqual([
      { electionId: 'e1', rule: 'vote_burst_network', action: 'flag', hits: 2 },
      { electionId: '', rule: 'disposable_email', action: 'reject', hits: 1 },
    ]);
    expect(stats.takeDeltas()).toEqual([]);
    stats.record([{ rule: 'vote_burst_network', action: 'flag' }], 'e1');
    stats.restoreDeltas(deltas);
    expect(stats.pendingFor('e1')).toEqual([{ electionId: 'e1', rule: 'vote_burst_network', action: 'flag', hits: 3 }]);
  });

  it('keeps at most electionsMax elections', () => {
    const stats = new FraudStats({ electionsMax: 2 });
    for (const id of ['e1', 'e2', 'e3']) stats.record([{ rule: 'vote_burst_network', action: 'flag' }], id);
    expect(stats.forElection('e1')).toEqual({});
    expect(stats.forElection('e3')).toEqual({ vote_burst_network: { flagged: 1, rejected: 0 } });
    expect(stats.totals()).toEqual({ vote_burst_network: { flagged: 3, rejected: 0 } });
  });
});
