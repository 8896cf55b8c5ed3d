// Long-running commands (server, client, `up`, back office, shipper) ask V8 to optimise hot code sooner.
//
// V8 compiles a function with its optimising tiers only after the function has run a budget of bytecode several
// times over. For a proxy, the per-connection path is a few hundred small functions (ours, ssh2's and Node's
// streams), each run a handful of times per connection: with V8's defaults a fresh client or server needs a few
// thousand connections before that path is optimised, and until then each new connection costs about 1 ms more
// (bench/connection-overhead.ts measures it). With a budget a thirty-third of the default it gets there within
// a few hundred connections.
// Short commands (init, generate, report) keep the defaults: for them, eager optimisation is only extra work.
import v8 from 'node:v8';

/** V8 flags set by tuneForLongRunning: an interrupt budget of 2048 bytes of bytecode instead of 67584 (Node 20). */
export const LONG_RUNNING_V8_FLAGS: readonly string[] = ['--interrupt-budget=2048'];

let tuned = false;

/**
 * Applies LONG_RUNNING_V8_FLAGS to this process. Takes effect as functions use up their current budgets, so it
 * works when called after the modules have loaded, at the start of a long-running command.
 */
export function tuneForLongRunning(): void {
  if (tuned) return;
  tuned = true;
  for (const flag of LONG_RUNNING_V8_FLAGS) v8.setFlagsFromString(flag);
}
