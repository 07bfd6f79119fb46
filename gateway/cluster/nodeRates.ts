// Votes per second per node, for the ops page. Each node counts the votes its shards handle in
// livevote_votes_routed_total (route local: cast here for a shard owned here; received: forwarded
// here by a peer); the node answering the admin view reads every live member's /metrics and turns
// two readings into a rate. A reading is reused for `sampleIntervalMs`, so any number of ops pages
// polling cost at most one fetch per node per interval; a node that does not answer within
// `fetchTimeoutMs` shows no rate (null) rather than delaying the view.

export interface NodeRateSettings {
  readonly sampleIntervalMs: number;
  readonly fetchTimeoutMs: number;
  /** A previous reading older than this gives no rate (the average over minutes says little). */
  readonly sampleAgeMaxMs: number;
  /** Members read at most; the rest show null. */
  readonly nodesMax: number;
}

export const nodeRateDefaults: NodeRateSettings = { sampleIntervalMs: 500, fetchTimeoutMs: 500, sampleAgeMaxMs: 30_000, nodesMax: 64 };

const routedLine = /^livevote_votes_routed_total\{([^}]*)\} (\S+)$/gm;

/** Votes handled by this node's shards so far (any outcome), from its metrics text (0 before the first). */
export function votesHandledTotal(metricsText: string): number {
  let total = 0;
  for (const match of metricsText.matchAll(routedLine)) {
    const labels = match[1]!;
    if (!labels.includes('route="local"') && !labels.includes('route="received"')) continue;
    const value = Number(match[2]);
    if (Number.isFinite(value)) total += value;
  }
  return total;
}

interface Reading {
  readonly atMs: number;
  readonly total: number;
  readonly rate: number | null;
}

export class NodeVoteRates {
  private readonly readings = new Map<string, Reading>();
  private readonly inFlight = new Map<string, Promise<number | null>>();

  constructor(
    private readonly deps: {
      readonly fetchMetrics: (url: string, timeoutMs: number) => Promise<string>;
      readonly nowMs: () => number;
      readonly settings?: NodeRateSettings;
    },
  ) {}

  /** Rates of the alive members (votes/s, null when unknown), by nodeId; never throws. */
  async ratesOf(nodes: readonly { readonly nodeId: string; readonly url: string; readonly status: string }[]): Promise<Map<string, number | null>> {
    const settings = this.deps.settings ?? nodeRateDefaults;
    const alive = nodes.filter((n) => n.status === 'alive').slice(0, settings.nodesMax);
    for (const nodeId of this.readings.keys()) if (!alive.some((n) => n.nodeId === nodeId)) this.readings.delete(nodeId);
    const rates = await Promise.all(alive.map((n) => this.rateOf(n.nodeId, n.url, settings)));
    return new Map(alive.map((n, i) => [n.nodeId, rates[i]!]));
  }

  private rateOf(nodeId: string, url: string, settings: NodeRateSettings): Promise<number | null> {
    const previous = this.readings.get(nodeId);
    if (previous && this.deps.nowMs() - previous.atMs < settings.sampleIntervalMs) return Promise.resolve(previous.rate);
    const running = this.inFlight.get(nodeId);
    if (running) return running;
    const reading = this.read(nodeId, url, settings).finally(() => this.inFlight.delete(nodeId));
    this.inFlight.set(nodeId, reading);
    return reading;
  }

  private async read(nodeId: string, url: string, settings: NodeRateSettings): Promise<number | null> {
    let total: number | undefined;
    try {
      total = votesHandledTotal(await this.deps.fetchMetrics(`${url.replace(/\/+$/, '')}/metrics`, settings.fetchTimeoutMs));
    } catch {
      total = undefined;
    }
    const atMs = this.deps.nowMs();
    if (total === undefined) {
      this.readings.delete(nodeId);
      return null;
    }
    const previous = this.readings.get(nodeId);
    let rate: number | null = null;
    // A smaller total is a restarted process (its counters start again): no rate from that pair.
    if (previous && atMs > previous.atMs && atMs - previous.atMs <= settings.sampleAgeMaxMs && total >= previous.total) {
      rate = ((total - previous.total) * 1000) / (atMs - previous.atMs);
    }
    this.readings.set(nodeId, { atMs, total, rate });
    return rate;
  }
}

/** Fetch with a deadline, for NodeVoteRates. */
export async function fetchMetricsText(url: string, timeoutMs: number): Promise<string> {
  const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return await response.text();
}
