// A minimal SOCKS5 client for the benchmarks: one CONNECT (domain name), then an HTTP/1.1 GET; resolves with the
// body length. Used to time many short requests without a process per request, so it is kept as lean as the
// direct baseline it is compared with: one 'data' listener per socket, no buffering beyond the few reply bytes.
import { connect, type Socket } from 'node:net';

const GREETING = Buffer.from([5, 1, 0]);

/** Bytes of a SOCKS5 reply whose first 5 bytes are `head` (the 5th is the domain length for type 3). */
function replyLength(head: Buffer): number {
  const atyp = head[3];
  if (atyp === 1) return 4 + 4 + 2;
  if (atyp === 4) return 4 + 16 + 2;
  return 4 + 1 + (head[4] as number) + 2;
}

/** Resolves with a socket on which a SOCKS5 CONNECT to host:port succeeded through the proxy at socksPort. */
export function socksConnect(socksPort: number, host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port: socksPort, noDelay: true });
    const name = Buffer.from(host);
    const request = Buffer.alloc(7 + name.length);
    request.set([5, 1, 0, 3, name.length]);
    name.copy(request, 5);
    request.writeUInt16BE(port, 5 + name.length);
    let stage: 'method' | 'reply' = 'method';
    let pending: Buffer | null = null;
    const fail = (err: Error): void => {
      sock.destroy();
      reject(err);
    };
    const onData = (chunk: Buffer): void => {
      const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      pending = null;
      if (stage === 'method') {
        if (buf.length < 2) return void (pending = buf);
        if (buf[1] !== 0) return fail(new Error('SOCKS method refused'));
        stage = 'reply';
        sock.write(request);
        if (buf.length === 2) return;
        return onData(buf.subarray(2));
      }
      if (buf.length < 5) return void (pending = buf);
      if (buf[1] !== 0) return fail(new Error(`SOCKS CONNECT failed: reply ${buf[1]}`));
      const n = replyLength(buf);
      if (buf.length < n) return void (pending = buf);
      sock.off('data', onData);
      sock.off('error', fail);
      // Paused before any surplus goes back, so that no byte is emitted while nobody listens.
      sock.pause();
      if (buf.length > n) sock.unshift(buf.subarray(n));
      resolve(sock);
    };
    sock.on('data', onData);
    sock.on('error', fail);
    sock.once('connect', () => sock.write(GREETING));
  });
}

export function plainConnect(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port, noDelay: true });
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
  });
}

/** GET path with Connection: close; resolves with the number of body bytes. */
export function httpGet(sock: Socket, host: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let total = 0;
    let headerDone = false;
    let pending: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      if (headerDone) {
        total += d.length;
        return;
      }
      pending = pending.length === 0 ? d : Buffer.concat([pending, d]);
      const i = pending.indexOf('\r\n\r\n');
      if (i >= 0) {
        headerDone = true;
        total += pending.length - i - 4;
      }
    });
    sock.once('end', () => {
      sock.destroy();
      resolve(total);
    });
    sock.once('error', reject);
    sock.resume();
    sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  });
}
