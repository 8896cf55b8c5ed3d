// How commands speak: results on stdout (JSON with --json), diagnostics on stderr, one exit path for errors.
import { CommanderError } from 'commander';
import { PosternError, isPosternError, describeError } from '../common/errors.ts';
import { redactString } from '../common/redact.ts';

export function printResult(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : human() + '\n');
}

/** Exit codes: 1 for a failure the user can act on, 2 for a wrong command line, 70 for a bug. */
export function exitWithError(e: unknown): never {
  if (e instanceof CommanderError) process.exit(e.exitCode);
  if (isPosternError(e)) {
    process.stderr.write(`postern: ${e.message}\n`);
    process.exit(e.code === 'BAD_ARGUMENT' ? 2 : 1);
  }
  // Unexpected: a bug. Keep the stack, but pass it through the redactor like every log line.
  const text = e instanceof Error && e.stack ? e.stack : describeError(e);
  process.stderr.write(`postern: internal error (please report): ${redactString(text)}\n`);
  process.exit(70);
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function commaList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

export function parseHostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535)
    throw new PosternError('BAD_ARGUMENT', `${flag} "${value}" must be HOST:PORT, e.g. 127.0.0.1:1080`);
  return { host: (m[1] ?? m[2]) as string, port };
}
