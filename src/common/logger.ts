// The one logger: pino with a redaction step that always runs over every field and the message.
import { pino, type Logger, type DestinationStream } from 'pino';
import { redactString, redactValue } from './redact.ts';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level?: string;
  name?: string;
  /** Where lines go; defaults to stderr so stdout stays free for command output. */
  destination?: DestinationStream;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const dest = opts.destination ?? pino.destination({ fd: 2, sync: true });
  return pino(
    {
      level: opts.level ?? process.env['POSTERN_LOG_LEVEL'] ?? 'info',
      ...(opts.name ? { name: opts.name } : {}),
      base: undefined,
      formatters: {
        log: (obj) => redactValue(obj) as Record<string, unknown>,
      },
      hooks: {
        logMethod(args, method) {
          // pino takes an Error's message as the line's message before any formatter runs: redact it here.
          const [first, ...rest] = args as unknown[];
          const head =
            first instanceof Error
              ? [{ err: redactValue(first) }, ...(rest.length ? [] : [redactString(first.message)])]
              : [typeof first === 'string' ? redactString(first) : first];
          const redacted = [...head, ...rest.map((a) => (typeof a === 'string' ? redactString(a) : a))];
          return method.apply(this, redacted as Parameters<typeof method>);
        },
      },
    },
    dest,
  );
}

/** A logger that writes nothing, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
