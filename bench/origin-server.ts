// The benchmarks' origin in a process of its own, so its CPU is not counted for the tunnel: prints its port.
import { startOrigin } from '../test/helpers/origin.ts';

const origin = await startOrigin('127.0.0.1');
process.stdout.write(`origin port ${origin.port}\n`);
process.on('SIGTERM', () => void origin.close().then(() => process.exit(0)));
