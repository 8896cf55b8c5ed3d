// After NEWKEYS the OSSH wrapper should cost next to nothing: this pumps the same volume over loopback through
// a bare socket pair and through a client/server wrapper pair past NEWKEYS, in the same run, and prints the
// wrapped/raw ratios of throughput and CPU time. Usage: node --import tsx bench/transport/ossh-passthrough.ts [MiB]

import net from 'node:net';
import type { Duplex } from 'node:stream';
import { acceptObfuscatedSsh, dialObfuscatedSsh } from '../../src/transport/index.ts';

const MIB = 1024 * 1024;
const TOTAL = Number(process.argv[2] ?? 512) * MIB;
const CHUNK = Buffer.alloc(64 * 1024, 7);
const ROUNDS = 3;

function newKeysHandshake(name: string): Buffer {
  // An identification line and an RFC 4253-padded NEWKEYS packet: all a wrapper needs to reach pass-through.
  const packet = Buffer.from([0, 0, 0, 12, 10, 21, ...new Array<number>(10).fill(0)]);
  return Buffer.concat([Buffer.from(`SSH-2.0-${name}\r\n`), packet]);
}

interface Result {
  mbPerSecond: number;
  cpuSecondsPerGb: number;
}

function run(wrapped: boolean): Promise<Result> {
  return new Promise((resolve) => {
    const server = net.createServer((socket) => {
      socket.setNoDelay(true);
      void (async () => {
        let stream: Duplex = socket;
        if (wrapped) {
          const accepted = await acceptObfuscatedSsh(socket, { obfuscationKeyword: 'bench' });
          accepted.write(newKeysHandshake('server'));
          stream = accepted;
        }
        let received = 0;
        let start = 0;
        let cpu = process.cpuUsage();
        stream.on('data', (chunk: Buffer) => {
          if (start === 0) {
            start = performance.now();
            cpu = process.cpuUsage();
          }
          received += chunk.length;
          if (received < TOTAL) return;
          const seconds = (performance.now() - start) / 1000;
          const used = process.cpuUsage(cpu);
          stream.destroy();
          server.close();
          resolve({
            mbPerSecond: received / 1e6 / seconds,
            cpuSecondsPerGb: (used.user + used.system) / 1e6 / (received / 1e9),
          });
        });
      })();
    });
    server.listen(0, '127.0.0.1', () => {
      const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      socket.setNoDelay(true);
      socket.on('error', () => {});
      let stream: Duplex = socket;
      if (wrapped) {
        stream = dialObfuscatedSsh(socket, { obfuscationKeyword: 'bench' });
        stream.on('error', () => {});
        stream.write(newKeysHandshake('client'));
      }
      let sent = 0;
      const pump = (): void => {
        while (sent < TOTAL + CHUNK.length) {
          sent += CHUNK.length;
          if (!stream.write(CHUNK)) {
            stream.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
  });
}

const raw: Result[] = [];
const wrapped: Result[] = [];
for (let i = 0; i < ROUNDS; i++) {
  raw.push(await run(false));
  wrapped.push(await run(true));
}
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const rawMb = mean(raw.map((r) => r.mbPerSecond));
const wrappedMb = mean(wrapped.map((r) => r.mbPerSecond));
const rawCpu = mean(raw.map((r) => r.cpuSecondsPerGb));
const wrappedCpu = mean(wrapped.map((r) => r.cpuSecondsPerGb));
console.log(
  `raw socket pair:   ${rawMb.toFixed(0)} MB/s, ${rawCpu.toFixed(2)} CPU-s/GB (both ends, one process)`,
);
console.log(`OSSH pass-through: ${wrappedMb.toFixed(0)} MB/s, ${wrappedCpu.toFixed(2)} CPU-s/GB`);
console.log(
  `ratio wrapped/raw: throughput ${(wrappedMb / rawMb).toFixed(2)}x, CPU ${(wrappedCpu / rawCpu).toFixed(2)}x`,
);
