import pino from 'pino';

export type Logger = pino.Logger;

/** JSON logs to stdout. Secrets never reach a log line: redact the fields that could carry them. */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service: 'livevote', ...bindings },
    redact: {
      paths: ['password', '*.password', 'token', '*.token', 'authorization', '*.authorization', 'refreshToken', '*.refreshToken'],
      censor: '[redacted]',
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** A logger that drops everything: for tests that are not about logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
