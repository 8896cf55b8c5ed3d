// A minimal SOCKS5 client for the benchmarks: one CONNECT (domain or IPv4), then an HTTP/1.1 GET; resolves
// with the body length. Used to time many short requests without a process per request.
import { connect, type Socket } from 'node:net';

function readExactly(sock: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) {
        sock.off('data', onData);
        sock.off('error', reject);
        // Paused before the surplus goes back, so that no byte is emitted while nobody listens.
        sock.pause();
        const rest = buf.subarray(n);
        if (rest.length) sock.unshift(rest);
        resolve(buf.subarray(0, n));
      }
    };
    sock.on('data', onData);
    sock.once('error', reject);
    sock.resume();
  });
}

export async function socksConnect(socksPort: number, host: string, port: number): Promise<Socket> {
  const sock = connect({ host: '127.0.0.1', port: socksPort, noDelay: true });
  await new Promise<void>((r, j) => sock.once('connect', () => r()).once('error', j));
  sock.write(Buffer.from([5, 1, 0]));
  const hello = await readExactly(sock, 2);
  if (hello[1] !== 0) throw new Error('SOCKS method refused');
  const name = Buffer.from(host);
  const req = Buffer.concat([
    Buffer.from([5, 1, 0, 3, name.length]),
    name,
    Buffer.from([port >> 8, port & 0xff]),
  ]);
  sock.write(req);
  const head = await readExactly(sock, 4);
  if (head[1] !== 0) throw new Error(`SOCKS CONNECT failed: reply ${head[1]}`);
  const addrLen = head[3] === 1 ? 4 : head[3] === 4 ? 16 : ((await readExactly(sock, 1))[0] as number);
  await readExactly(sock, addrLen + 2);
  return sock;
}

export async function plainConnect(host: string, port: number): Promise<Socket> {
  const sock = connect({ host, port, noDelay: true });
  await new Promise<void>((r, j) => sock.once('connect', () => r()).once('error', j));
  return sock;
}

/** GET path with Connection: close; resolves with the number of body bytes. */
export function httpGet(sock: Socket, host: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let total = 0;
    let headerDone = false;
    let pending = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      if (headerDone) {
        total += d.length;
        return;
      }
      pending = Buffer.concat([pending, d]);
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
