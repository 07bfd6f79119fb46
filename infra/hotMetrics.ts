// Counters and histograms for the per-request hot path, registered in a prom-client Registry and
// exported exactly as prom-client's own (same text format, same `le` buckets).
//
// Why not prom-client's: every inc()/observe() there (children included) rebuilds and hashes the
// label set, validates it and allocates a closure: about 4 µs per request here, ~5% of a vote's
// CPU in the profile (bench/README.md). Here a series is looked up once by the caller and kept;
// updating it is plain arithmetic. Label values are fixed when the series is created.
import type { Registry } from 'prom-client';

type Labels<L extends string> = Readonly<Record<L, string>>;

interface MetricValue {
  readonly value: number;
  readonly labels: Record<string, string | number>;
  readonly metricName?: string;
}

interface HotMetricOptions<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  readonly registers: readonly Registry[];
  /** Bounds the label combinations a caller can create (labels come from code, not requests). */
  readonly seriesMax?: number;
}

const seriesMaxDefault = 1_000;

/** S: a series' state; H: the handle callers update it through. */
abstract class HotMetric<L extends string, S, H> {
  readonly name: string;
  readonly help: string;
  readonly aggregator = 'sum';
  abstract readonly type: 'counter' | 'histogram';
  /** Per label set: its values, its state, and the one handle labels() gives out for it. */
  protected readonly series = new Map<string, { labels: Labels<L>; state: S; handle: H }>();
  private readonly labelNames: readonly L[];
  private readonly seriesMax: number;

  constructor(options: HotMetricOptions<L>) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames;
    this.seriesMax = options.seriesMax ?? seriesMaxDefault;
    for (const registry of options.registers) registry.registerMetric(this as never);
  }

  /** The handle of a series, created with its state (`make` runs once per label set). */
  protected handleFor(labels: Labels<L>, create: () => S, make: (state: S) => H): H {
    const key = this.labelNames.map((n) => labels[n]).join('\u0000');
    const existing = this.series.get(key);
    if (existing) return existing.handle;
    for (const name of Object.keys(labels)) {
      if (!this.labelNames.includes(name as L)) throw new Error(`${this.name}: unknown label ${name}`);
    }
    if (this.series.size >= this.seriesMax) throw new Error(`${this.name}: more than ${this.seriesMax} label combinations`);
    const state = create();
    const handle = make(state);
    this.series.set(key, { labels: { ...labels }, state, handle });
    return handle;
  }

  protected abstract values(): MetricValue[];

  /** What prom-client's Registry reads at scrape time. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValue[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() };
  }

  reset(): void {
    this.series.clear();
  }
}

export interface HotCounterSeries {
  inc(by?: number): void;
}

export class HotCounter<L extends string> extends HotMetric<L, { value: number }, HotCounterSeries> {
  readonly type = 'counter';

  /** The series of these label values (the same object each time); cheapest when kept. */
  labels(labels: Labels<L>): HotCounterSeries {
    return this.handleFor(labels, () => ({ value: 0 }), (state) => ({
      inc(by = 1) {
        state.value += by;
      },
    }));
  }

  protected values(): MetricValue[] {
    return [...this.series.values()].map((s) => ({ value: s.state.value, labels: { ...s.labels } }));
  }
}

export interface HotHistogramSeries {
  observe(value: number): void;
}

interface HistogramState {
  /** counts[i]: observations in (bounds[i-1], bounds[i]]; the last slot is (last bound, +Inf). */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

export class HotHistogram<L extends string> extends HotMetric<L, HistogramState, HotHistogramSeries> {
  readonly type = 'histogram';
  private readonly bounds: readonly number[];

  constructor(options: HotMetricOptions<L> & { readonly buckets: readonly number[] }) {
    super(options);
    const sorted = [...options.buckets].sort((a, b) => a - b);
    if (sorted.length === 0 || sorted.some((b, i) => !Number.isFinite(b) || (i > 0 && b === sorted[i - 1]))) {
      throw new Error(`${options.name}: buckets must be distinct finite numbers`);
    }
    this.bounds = sorted;
  }

  /** The series of these label values (the same object each time); cheapest when kept. */
  labels(labels: Labels<L>): HotHistogramSeries {
    const bounds = this.bounds;
    return this.handleFor(labels, () => ({ counts: new Float64Array(bounds.length + 1), sum: 0, count: 0 }), (state) => ({
      observe(value: number) {
        if (!Number.isFinite(value)) return;
        let i = 0;
        while (i < bounds.length && value > bounds[i]!) i++;
        state.counts[i]!++;
        state.sum += value;
        state.count++;
      },
    }));
  }

  protected values(): MetricValue[] {
    const out: MetricValue[] = [];
    for (const { labels, state } of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += state.counts[i]!;
        out.push({ metricName: `${this.name}_bucket`, labels: { le: i < this.bounds.length ? this.bounds[i]! : '+Inf', ...labels }, value: cumulative });
      }
      out.push({ metricName: `${this.name}_sum`, labels: { ...labels }, value: state.sum });
      out.push({ metricName: `${this.name}_count`, labels: { ...labels }, value: state.count });
    }
    return out;
  }
}
