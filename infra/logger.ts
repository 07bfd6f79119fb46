import pino from 'pino';

export type Logger = pino.Logger;

/** Secrets never reach a log line: the fields that could carry them are redacted. */
export const redactedLogFields: pino.LoggerOptions['redact'] = {
  paths: ['password', '*.password', 'token', '*.token', 'authorization', '*.authorization', 'refreshToken', '*.refreshToken'],
  censor: '[redacted]',
};

/** JSON logs to stdout. */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service: 'livevote', ...bindings },
    redact: redactedLogFields,
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** A logger that drops everything: for tests that are not about logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
