// One Prometheus registry per app instance (not the global one), so tests that build several
// apps in one process do not collide on metric names.
import { Counter, Registry, collectDefaultMetrics } from 'prom-client';
import { HotCounter, HotHistogram } from './hotMetrics.ts';

export interface Metrics {
  readonly registry: Registry;
  // Updated on every request: hot-path metrics (infra/hotMetrics.ts), exported like prom-client's.
  readonly httpRequestsTotal: HotCounter<'method' | 'route' | 'status'>;
  readonly httpRequestDurationSeconds: HotHistogram<'method' | 'route' | 'status'>;
  /** Exceptions that reached the HTTP layer's last-resort guard (gateway/http.ts): each one is a bug. */
  readonly httpHandlerErrorsTotal: Counter<'route'>;
}

export function createMetrics(options: { defaultMetrics: boolean }): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'livevote_' });
  const httpRequestsTotal = new HotCounter({
    name: 'livevote_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const httpRequestDurationSeconds = new HotHistogram({
    name: 'livevote_http_request_duration_seconds',
    help: 'Time from request start to response end, by method, route pattern and status code',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const httpHandlerErrorsTotal = new Counter({
    name: 'livevote_http_handler_errors_total',
    help: 'Exceptions caught by the last-resort guard around HTTP and WebSocket handlers (answered 500 internal_error when still possible), by route',
    labelNames: ['route'] as const,
    registers: [registry],
  });
  return { registry, httpRequestsTotal, httpRequestDurationSeconds, httpHandlerErrorsTotal };
}
