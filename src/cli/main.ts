// The `postern` command.
//
// Each top-level command's module is loaded only when that command runs: `client run` then starts without
// loading the server, the back office and their databases (about half the start-up time, which counts towards
// how fast a tunnel comes up). Help and unknown commands load them all.
import { Command } from 'commander';
import { exitWithError } from './output.ts';

/** The top-level commands, in the order help lists them. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  up: async () => (await import('./up.ts')).upCommand(),
  network: async () => (await import('./network.ts')).networkCommand(),
  server: async () => (await import('./server.ts')).serverCommand(),
  client: async () => (await import('./client.ts')).clientCommand(),
  stats: async () => (await import('./stats.ts')).statsCommand(),
  backoffice: async () => (await import('./backoffice.ts')).backofficeCommand(),
};

/** Builds the program with the commands `argv` can reach: the one it names, or all of them. */
export async function buildProgram(argv: readonly string[]): Promise<Command> {
  const program = new Command('postern')
    .description('Postern: a self-hostable censorship-circumvention network')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const named = argv[2];
  const names = named !== undefined && Object.hasOwn(COMMANDS, named) ? [named] : Object.keys(COMMANDS);
  for (const name of names) program.addCommand(await (COMMANDS[name] as () => Promise<Command>)());
  // Subcommands inherit error handling: a wrong flag exits 2 with a message, never a stack trace.
  const inherit = (c: Command) => {
    c.exitOverride().showHelpAfterError('(run with --help for usage)');
    c.commands.forEach(inherit);
  };
  program.commands.forEach(inherit);
  return program;
}

try {
  await (await buildProgram(process.argv)).parseAsync(process.argv);
} catch (e) {
  exitWithError(e);
}
