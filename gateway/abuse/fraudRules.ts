// Rule-based fraud checks, no ML: each rule either does not apply, flags the request (the route
// may then ask for a CAPTCHA: election policy on_risk) or rejects it (403 fraud_rejected). The
// verdict is the strongest action among the rules that fired, and the hits say which ones.
//
// Rules:
// - registration_velocity_ip / _network: more than countMax registrations from one IP / network
//   in windowMs. Account farms register from few places; households and CGNATs are why the IP
//   rule only flags by default while the network rule (a farm's whole /24) rejects.
// - disposable_email: the email's domain (or a parent) is a throwaway-mailbox service.
// - empty_user_agent / automation_user_agent: no User-Agent, or one naming a script or a
//   headless browser (curl, python-requests, HeadlessChrome, …). Trivially forged, so this only
//   catches the lazy; that is still most of them.
// - vote_burst_network: more than countMax votes for one candidate from one network in windowMs
//   in one election: one household votes for different people, a bot farm for one.
//
// The checks themselves are pure functions of their inputs and the counts; the counts live in
// bounded sliding-window counters (keys whose windows have passed are swept as traffic flows).
import type { Registry } from 'prom-client';
import { HotCounter, type HotCounterSeries } from '../../infra/hotMetrics.ts';
import { builtInDisposableEmailDomains } from './disposableEmailDomains.ts';
import { MapCursor } from './mapCursor.ts';

export type RuleAction = 'reject' | 'flag' | 'off';
export type FiredAction = Exclude<RuleAction, 'off'>;

export const fraudRuleNames = [
  'registration_velocity_ip',
  'registration_velocity_network',
  'disposable_email',
  'empty_user_agent',
  'automation_user_agent',
  'vote_burst_network',
] as const;
export type FraudRuleName = (typeof fraudRuleNames)[number];

export interface FraudHit {
  readonly rule: FraudRuleName;
  readonly action: FiredAction;
}

export type FraudVerdictKind = 'allow' | 'flag' | 'reject';

export interface FraudVerdict {
  readonly verdict: FraudVerdictKind;
  readonly hits: readonly FraudHit[];
}

export interface VelocityRule {
  readonly action: RuleAction;
  /** Fires when the count in the window, this request included, is above this. */
  readonly countMax: number;
  readonly windowMs: number;
}

export interface FraudRulesConfig {
  readonly registrationPerIp: VelocityRule;
  readonly registrationPerNetwork: VelocityRule;
  readonly disposableEmail: { readonly action: RuleAction; readonly extraDomains: readonly string[] };
  readonly emptyUserAgent: { readonly action: RuleAction };
  /** Signatures are case-insensitive substrings of the User-Agent. */
  readonly automationUserAgent: { readonly action: RuleAction; readonly signatures: readonly string[] };
  readonly voteBurst: VelocityRule;
  /** Keys each sliding-window counter keeps at most. */
  readonly countersMax: number;
}

export const defaultAutomationSignatures: readonly string[] = [
  'curl/', 'wget/', 'python-requests', 'python-urllib', 'python-httpx', 'aiohttp', 'go-http-client',
  'headlesschrome', 'phantomjs', 'selenium', 'webdriver', 'puppeteer', 'playwright', 'scrapy',
  'apache-httpclient', 'java-http-client', 'libwww-perl', 'node-fetch', 'axios/', 'httpie/', 'postmanruntime',
];

/**
 * Defaults; gateway/abuse/README.md gives the reason for each. Flags ask for a CAPTCHA only where
 * the policy is on_risk; rejections refuse. The network registration rule refuses only after a
 * thousand attempts an hour: before that, everything past an address's allowance has been
 * challenged by the rate limits (feature.ts), and a carrier's /24 is thousands of people.
 */
export const defaultFraudRulesConfig: FraudRulesConfig = {
  registrationPerIp: { action: 'flag', countMax: 10, windowMs: 3_600_000 },
  registrationPerNetwork: { action: 'reject', countMax: 1000, windowMs: 3_600_000 },
  disposableEmail: { action: 'reject', extraDomains: [] },
  emptyUserAgent: { action: 'flag' },
  automationUserAgent: { action: 'flag', signatures: defaultAutomationSignatures },
  voteBurst: { action: 'flag', countMax: 100, windowMs: 60_000 },
  countersMax: 200_000,
};

const allow: FraudVerdict = Object.freeze({ verdict: 'allow', hits: Object.freeze([]) as readonly FraudHit[] });

/** Strongest action wins: reject over flag over allow. */
export function verdictOf(hits: readonly FraudHit[]): FraudVerdict {
  if (hits.length === 0) return allow;
  let verdict: FraudVerdictKind = 'flag';
  for (const hit of hits) if (hit.action === 'reject') verdict = 'reject';
  return { verdict, hits };
}

// ---------------------------------------------------------------------------------------------
// Pure checks

/** The domain of an address, lowercased, or undefined when there is none. */
export function emailDomainOf(email: string): string | undefined {
  const at = email.lastIndexOf('@');
  if (at === -1) return undefined;
  let domain = email.slice(at + 1).trim().toLowerCase();
  if (domain.endsWith('.')) domain = domain.slice(0, -1);
  return domain === '' ? undefined : domain;
}

/** True when the domain or one of its parents is in `domains` (lowercase). */
export function isDisposableEmail(email: string, domains: ReadonlySet<string>): boolean {
  let domain = emailDomainOf(email);
  while (domain !== undefined) {
    if (domains.has(domain)) return true;
    const dot = domain.indexOf('.');
    domain = dot === -1 ? undefined : domain.slice(dot + 1);
  }
  return false;
}

/** Only the start of a User-Agent is looked at; real ones are a few hundred bytes. */
export const userAgentLengthMax = 512;

export function userAgentHits(userAgent: string, config: Pick<FraudRulesConfig, 'emptyUserAgent' | 'automationUserAgent'>): FraudHit[] {
  const hits: FraudHit[] = [];
  const text = userAgent.trim();
  if (text === '') {
    if (config.emptyUserAgent.action !== 'off') hits.push({ rule: 'empty_user_agent', action: config.emptyUserAgent.action });
    return hits;
  }
  if (config.automationUserAgent.action === 'off') return hits;
  const lower = text.slice(0, userAgentLengthMax).toLowerCase();
  for (const signature of config.automationUserAgent.signatures) {
    if (lower.includes(signature)) {
      hits.push({ rule: 'automation_user_agent', action: config.automationUserAgent.action });
      break;
    }
  }
  return hits;
}

/** Whether a velocity rule fires for `count` events in its window (this one included). */
export function velocityFires(rule: VelocityRule, count: number): boolean {
  return rule.action !== 'off' && count > rule.countMax;
}

// ---------------------------------------------------------------------------------------------
// Counting

interface WindowCounts {
  windowStartMs: number;
  current: number;
  previous: number;
}

/** Entries looked at, when the counter is full, for a dead key to drop instead of a live one. */
const evictionSearchMax = 16;

/**
 * Events per key over the last windowMs, estimated from two fixed windows (the current one and
 * the previous one, weighted by how much of it is still inside the sliding window): O(1) memory
 * per key and per event, exact when events do not straddle a window boundary.
 *
 * Bounded: each add looks at two keys under a round-robin cursor and drops those whose windows
 * have both passed; when full anyway, a key is dropped early (preferably a dead one) and counted.
 */
export class SlidingWindowCounter {
  private readonly counts = new Map<string, WindowCounts>();
  private readonly cursor = new MapCursor(this.counts);
  /** Live keys dropped because the counter was full. */
  evictedCount = 0;

  constructor(
    readonly windowMs: number,
    private readonly keysMax: number,
  ) {
    if (!(windowMs >= 1)) throw new Error('windowMs must be at least 1');
    if (!(keysMax >= 1)) throw new Error('keysMax must be at least 1');
  }

  get size(): number {
    return this.counts.size;
  }

  /** Records one event for `key`; returns the count in the sliding window, this one included. */
  add(key: string, nowMs: number): number {
    const windowStartMs = nowMs - (nowMs % this.windowMs);
    this.sweep(nowMs);
    let entry = this.counts.get(key);
    if (entry) {
      if (windowStartMs > entry.windowStartMs) {
        // One window later: current becomes previous. Two or more: both are out of the window.
        entry.previous = windowStartMs - entry.windowStartMs === this.windowMs ? entry.current : 0;
        entry.current = 0;
        entry.windowStartMs = windowStartMs;
      }
    } else {
      this.makeRoom(nowMs);
      entry = { windowStartMs, current: 0, previous: 0 };
      this.counts.set(key, entry);
    }
    entry.current++;
    // Clamped: a clock that stepped back must not weigh the previous window above 1.
    const elapsedMs = Math.min(this.windowMs, Math.max(0, nowMs - entry.windowStartMs));
    return entry.current + Math.floor(entry.previous * (1 - elapsedMs / this.windowMs));
  }

  private isDead(entry: WindowCounts, nowMs: number): boolean {
    return nowMs - entry.windowStartMs >= 2 * this.windowMs;
  }

  private sweep(nowMs: number): void {
    for (let n = 0; n < 2; n++) {
      const next = this.cursor.advance();
      if (!next) return;
      if (this.isDead(next[1], nowMs)) this.counts.delete(next[0]);
    }
  }

  private makeRoom(nowMs: number): void {
    while (this.counts.size >= this.keysMax) {
      let victim: [string, WindowCounts] | undefined;
      for (let n = 0; n < evictionSearchMax; n++) {
        victim = this.cursor.advance();
        if (!victim || this.isDead(victim[1], nowMs)) break;
      }
      if (!victim) return;
      if (!this.isDead(victim[1], nowMs)) this.evictedCount++;
      this.counts.delete(victim[0]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics

export interface RuleHitCounts {
  flagged: number;
  rejected: number;
}

export type FraudRuleCounts = Partial<Record<FraudRuleName, RuleHitCounts>>;

export interface FraudHitDelta {
  /** '' for rules not tied to an election. */
  readonly electionId: string;
  readonly rule: FraudRuleName;
  readonly action: FiredAction;
  readonly hits: number;
}

export interface FraudStatsOptions {
  /** Prometheus registry for livevote_fraud_rule_hits_total{rule, action}. */
  readonly registry?: Registry;
  /** Elections whose counts are kept in memory; beyond, the least recently hit is forgotten. */
  readonly electionsMax?: number;
}

/**
 * Hit counts by rule (and by election for vote rules), for the statistics endpoint and
 * /metrics. Counts here are this node's since start; `takeDeltas` hands what is new to the
 * Postgres flush (persistence/abuse.ts) that adds up every node's counts.
 */
export class FraudStats {
  private readonly totalCounts: FraudRuleCounts = {};
  private readonly byElection = new Map<string, FraudRuleCounts>();
  /** The election (or '') hit last: the most recent in byElection already, no reordering needed. */
  private lastScope: string | undefined;
  private pending = new Map<string, { -readonly [K in keyof FraudHitDelta]: FraudHitDelta[K] }>();
  private readonly electionsMax: number;
  /**
   * livevote_fraud_rule_hits_total, a HotCounter: with a rule that fires on most votes (a client
   * without a User-Agent, flagged), prom-client's per-call label hashing was paid per vote.
   */
  private readonly hitsTotal: HotCounter<'rule' | 'action'> | undefined;
  private readonly hitSeries = new Map<string, HotCounterSeries>();

  constructor(options: FraudStatsOptions = {}) {
    this.electionsMax = options.electionsMax ?? 10_000;
    this.hitsTotal = options.registry
      ? new HotCounter({
          name: 'livevote_fraud_rule_hits_total',
          help: 'Fraud rule hits, by rule and action (flag or reject)',
          labelNames: ['rule', 'action'] as const,
          registers: [options.registry],
        })
      : undefined;
  }

  /** Hits of a vote are recorded under its election, the others under ''. */
  record(hits: readonly FraudHit[], electionId = ''): void {
    if (hits.length === 0) return;
    const scope = electionId;
    let electionCounts = this.byElection.get(scope);
    if (electionCounts === undefined) {
      electionCounts = {};
      if (this.byElection.size >= this.electionsMax) {
        const oldest = this.byElection.keys().next();
        if (!oldest.done) this.byElection.delete(oldest.value);
      }
      this.byElection.set(scope, electionCounts);
    } else if (scope !== this.lastScope) {
      // Re-inserted last: the least recently hit election is the first forgotten.
      this.byElection.delete(scope);
      this.byElection.set(scope, electionCounts);
    }
    this.lastScope = scope;
    for (const hit of hits) {
      bump(this.totalCounts, hit);
      bump(electionCounts, hit);
      const ruleAction = `${hit.rule}\u0000${hit.action}`;
      if (this.hitsTotal) {
        let series = this.hitSeries.get(ruleAction);
        if (series === undefined) this.hitSeries.set(ruleAction, (series = this.hitsTotal.labels({ rule: hit.rule, action: hit.action })));
        series.inc();
      }
      const pendingKey = `${scope}\u0000${ruleAction}`;
      const pending = this.pending.get(pendingKey);
      // The pending map holds at most (elections hit since the last flush) × rules × 2 entries.
      if (pending) pending.hits++;
      else this.pending.set(pendingKey, { electionId: scope, rule: hit.rule, action: hit.action, hits: 1 });
    }
  }

  /** This node's counts for every rule since start. */
  totals(): FraudRuleCounts {
    return cloneCounts(this.totalCounts);
  }

  /** This node's counts for one election's votes ('' for registration and login). */
  forElection(electionId: string): FraudRuleCounts {
    return cloneCounts(this.byElection.get(electionId) ?? {});
  }

  /** What was recorded since the last call; give it back with `restoreDeltas` if storing fails. */
  takeDeltas(): FraudHitDelta[] {
    const deltas = [...this.pending.values()];
    this.pending = new Map();
    return deltas;
  }

  restoreDeltas(deltas: readonly FraudHitDelta[]): void {
    for (const delta of deltas) {
      const key = `${delta.electionId}\u0000${delta.rule}\u0000${delta.action}`;
      const pending = this.pending.get(key);
      this.pending.set(key, { ...delta, hits: delta.hits + (pending?.hits ?? 0) });
    }
  }

  /** Deltas not yet taken for one election ('' for the rules not tied to one). */
  pendingFor(electionId: string): FraudHitDelta[] {
    return [...this.pending.values()].filter((d) => d.electionId === electionId);
  }
}

function bump(counts: FraudRuleCounts, hit: FraudHit): void {
  const entry = counts[hit.rule] ?? (counts[hit.rule] = { flagged: 0, rejected: 0 });
  if (hit.action === 'reject') entry.rejected++;
  else entry.flagged++;
}

function cloneCounts(counts: FraudRuleCounts): FraudRuleCounts {
  const out: FraudRuleCounts = {};
  for (const name of fraudRuleNames) {
    const entry = counts[name];
    if (entry) out[name] = { ...entry };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The rules, with their counters

export interface RegistrationInput {
  readonly ip: string;
  readonly networkKey: string;
  readonly email: string;
  readonly userAgent: string;
}

export interface VoteInput {
  readonly electionId: string;
  /** Candidate id or index: anything that names one candidate of the election. */
  readonly candidate: string | number;
  readonly networkKey: string;
  readonly userAgent: string;
}

/** Elections whose short stand-in (FraudRules.electionOrdinal) is remembered: a show runs a few at once. */
const electionOrdinalsMax = 1024;

/** Distinct User-Agents whose verdict is remembered: votes repeat a handful of browsers. */
const userAgentCacheMax = 1024;

export class FraudRules {
  private readonly disposableDomains: ReadonlySet<string>;
  private readonly registrationsPerIp: SlidingWindowCounter;
  private readonly registrationsPerNetwork: SlidingWindowCounter;
  private readonly votesPerNetworkCandidate: SlidingWindowCounter;
  private readonly userAgentCache = new Map<string, readonly FraudHit[]>();
  private readonly electionOrdinals = new Map<string, string>();
  private nextElectionOrdinal = 0;

  constructor(
    readonly config: FraudRulesConfig,
    readonly stats: FraudStats = new FraudStats(),
  ) {
    for (const rule of [config.registrationPerIp, config.registrationPerNetwork, config.voteBurst]) {
      if (!(rule.countMax >= 0) || !(rule.windowMs >= 1)) throw new Error('velocity rules need countMax ≥ 0 and windowMs ≥ 1');
    }
    this.disposableDomains = new Set([...builtInDisposableEmailDomains, ...config.disposableEmail.extraDomains].map((d) => d.trim().toLowerCase()).filter((d) => d !== ''));
    this.registrationsPerIp = new SlidingWindowCounter(config.registrationPerIp.windowMs, config.countersMax);
    this.registrationsPerNetwork = new SlidingWindowCounter(config.registrationPerNetwork.windowMs, config.countersMax);
    this.votesPerNetworkCandidate = new SlidingWindowCounter(config.voteBurst.windowMs, config.countersMax);
  }

  /** Counts the registration attempt (refused ones too: a farm retrying is still a farm). */
  evaluateRegistration(input: RegistrationInput, nowMs: number): FraudVerdict {
    const hits = [...this.userAgentHitsCached(input.userAgent)];
    const { registrationPerIp, registrationPerNetwork, disposableEmail } = this.config;
    if (registrationPerIp.action !== 'off' && velocityFires(registrationPerIp, this.registrationsPerIp.add(input.ip, nowMs))) {
      hits.push({ rule: 'registration_velocity_ip', action: registrationPerIp.action });
    }
    if (registrationPerNetwork.action !== 'off' && velocityFires(registrationPerNetwork, this.registrationsPerNetwork.add(input.networkKey, nowMs))) {
      hits.push({ rule: 'registration_velocity_network', action: registrationPerNetwork.action });
    }
    if (disposableEmail.action !== 'off' && isDisposableEmail(input.email, this.disposableDomains)) {
      hits.push({ rule: 'disposable_email', action: disposableEmail.action });
    }
    this.stats.record(hits);
    return verdictOf(hits);
  }

  /** Login checks only the User-Agent: velocity on login is the rate limiter's job. */
  evaluateLogin(input: { readonly userAgent: string }): FraudVerdict {
    const hits = this.userAgentHitsCached(input.userAgent);
    this.stats.record(hits);
    return verdictOf(hits);
  }

  /** Hot path: one cached UA lookup and one counter update; no allocation when nothing fires. */
  evaluateVote(input: VoteInput, nowMs: number): FraudVerdict {
    const userAgentFired = this.userAgentHitsCached(input.userAgent);
    const { voteBurst } = this.config;
    let hits = userAgentFired;
    if (voteBurst.action !== 'off') {
      const key = `${this.electionOrdinal(input.electionId)}\u0000${input.networkKey}\u0000${input.candidate}`;
      if (velocityFires(voteBurst, this.votesPerNetworkCandidate.add(key, nowMs))) {
        hits = [...userAgentFired, { rule: 'vote_burst_network', action: voteBurst.action }];
      }
    }
    this.stats.record(hits, input.electionId);
    return verdictOf(hits);
  }

  /**
   * A short stand-in for an election id in the burst counter's keys: the counter holds up to
   * countersMax keys, each hashed on every vote, and a uuid was two thirds of one. Never reused:
   * when the table is full it starts over with new numbers, and the keys under the old ones
   * (counting up again from zero) die out of the counter within two windows.
   */
  private electionOrdinal(electionId: string): string {
    let ordinal = this.electionOrdinals.get(electionId);
    if (ordinal === undefined) {
      if (this.electionOrdinals.size >= electionOrdinalsMax) this.electionOrdinals.clear();
      ordinal = (this.nextElectionOrdinal++).toString(36);
      this.electionOrdinals.set(electionId, ordinal);
    }
    return ordinal;
  }

  private userAgentHitsCached(userAgent: string): readonly FraudHit[] {
    const key = userAgent.length > userAgentLengthMax ? userAgent.slice(0, userAgentLengthMax) : userAgent;
    const cached = this.userAgentCache.get(key);
    if (cached) return cached;
    const hits = Object.freeze(userAgentHits(key, this.config));
    // Full: start over. Cheaper than LRU bookkeeping per vote, and refills in a few requests.
    if (this.userAgentCache.size >= userAgentCacheMax) this.userAgentCache.clear();
    this.userAgentCache.set(key, hits);
    return hits;
  }
}
