// A TCP port that was free a moment ago on a loopback or local address: for configs that must name a port before
// the listener exists (a server entry carries its ports). Another process may take it in between; callers that
// can listen on port 0 should do that instead.
import { createServer } from 'node:net';

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}
