// The `postern` command. Every command's module is loaded up front: loading only the command that runs made
// `client run` start faster, but its smaller heap sent about one download in three into a mode where the
// client spent twice the CPU per byte (mostly garbage collection of the packet buffers), which the throughput
// benchmark caught; see the README's performance notes.
import { Command } from 'commander';
import { networkCommand } from './network.ts';
import { serverCommand } from './server.ts';
import { clientCommand } from './client.ts';
import { upCommand } from './up.ts';
import { statsCommand } from './stats.ts';
import { backofficeCommand } from './backoffice.ts';
import { exitWithError } from './output.ts';

export function buildProgram(): Command {
  const program = new Command('postern')
    .description('Postern: a self-hostable censorship-circumvention network')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  program.addCommand(upCommand());
  program.addCommand(networkCommand());
  program.addCommand(serverCommand());
  program.addCommand(clientCommand());
  program.addCommand(statsCommand());
  program.addCommand(backofficeCommand());
  // Subcommands inherit error handling: a wrong flag exits 2 with a message, never a stack trace.
  const inherit = (c: Command) => {
    c.exitOverride().showHelpAfterError('(run with --help for usage)');
    c.commands.forEach(inherit);
  };
  program.commands.forEach(inherit);
  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (e) {
  exitWithError(e);
}
