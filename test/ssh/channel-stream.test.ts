// ChannelStream against a fake connection: window accounting both ways, packet sizes, congestion, EOF and
// close sequences, and what a misbehaving peer causes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChannelStream, type ChannelHost } from '../../src/ssh/channel-stream.ts';

class FakeHost implements ChannelHost {
  sent: Buffer[] = [];
  adjusts: number[] = [];
  eofs = 0;
  closes = 0;
  finished = 0;
  violations: string[] = [];
  congested = false;
  waiting: ChannelStream[] = [];
  counted = { received: 0, sent: 0 };
  sendChannelData(_remoteId: number, data: Buffer): void {
    this.sent.push(Buffer.from(data));
  }
  sendWindowAdjust(_remoteId: number, bytes: number): void {
    this.adjusts.push(bytes);
  }
  sendChannelEof(): void {
    this.eofs++;
  }
  sendChannelClose(): void {
    this.closes++;
  }
  isCongested(): boolean {
    return this.congested;
  }
  waitForDrain(channel: ChannelStream): void {
    this.waiting.push(channel);
  }
  channelFinished(): void {
    this.finished++;
  }
  protocolViolation(message: string): void {
    this.violations.push(message);
  }
  countChannelBytes(received: number, sent: number): void {
    this.counted.received += received;
    this.counted.sent += sent;
  }
  drain(): void {
    this.congested = false;
    const w = this.waiting.splice(0);
    for (const c of w) c.resumeWrites();
  }
  get sentBytes(): number {
    return this.sent.reduce((n, b) => n + b.length, 0);
  }
}

function channel(
  host: FakeHost,
  opts: Partial<{ localWindow: number; remoteWindow: number; remoteMaxPacket: number }> = {},
) {
  return new ChannelStream(host, {
    type: 'direct-tcpip',
    localId: 1,
    remoteId: 7,
    localWindow: opts.localWindow ?? 64 * 1024,
    localMaxPacket: 32 * 1024,
    remoteWindow: opts.remoteWindow ?? 1024 * 1024,
    remoteMaxPacket: opts.remoteMaxPacket ?? 32 * 1024,
  });
}

const tick = () => new Promise((r) => setImmediate(r));

test('writes are cut to the peer maximum packet size and stop at the peer window until it grows', async () => {
  const host = new FakeHost();
  const ch = channel(host, { remoteWindow: 5000, remoteMaxPacket: 1000 });
  let written = false;
  ch.write(Buffer.alloc(12_000, 1), () => (written = true));
  await tick();
  assert.equal(host.sentBytes, 5000);
  assert.ok(host.sent.every((b) => b.length <= 1000));
  assert.equal(written, false, 'the write callback waits for the window');
  ch.onWindowAdjust(4000);
  assert.equal(host.sentBytes, 9000);
  ch.onWindowAdjust(100_000);
  await tick();
  assert.equal(host.sentBytes, 12_000);
  assert.equal(written, true);
  assert.equal(host.counted.sent, 12_000);
});

test('a congested transport holds writes until it drains', async () => {
  const host = new FakeHost();
  const ch = channel(host);
  host.congested = true;
  ch.write(Buffer.alloc(50_000));
  await tick();
  assert.equal(host.sentBytes, 0);
  assert.equal(host.waiting.length, 1);
  host.drain();
  assert.equal(host.sentBytes, 50_000);
});

test('window is granted back only as the consumer reads, and not while it is paused', async () => {
  const host = new FakeHost();
  const ch = channel(host, { localWindow: 64 * 1024 });
  ch.pause();
  for (let i = 0; i < 4; i++) ch.onData(Buffer.alloc(16 * 1024));
  await tick();
  assert.deepEqual(host.adjusts, [], 'a paused consumer gets no more window');
  // The peer has used the whole window: one more byte is a violation.
  ch.onData(Buffer.alloc(1));
  assert.equal(host.violations.length, 1);
  let read = 0;
  ch.on('data', (d: Buffer) => (read += d.length));
  ch.resume();
  await tick();
  await tick();
  assert.equal(read, 64 * 1024);
  const granted = host.adjusts.reduce((a, b) => a + b, 0);
  assert.equal(granted, 64 * 1024, 'everything read is granted back');
  assert.equal(host.counted.received, 64 * 1024);
});

test('a packet larger than our maximum packet size is a violation', () => {
  const host = new FakeHost();
  const ch = channel(host, { localWindow: 1024 * 1024 });
  ch.onData(Buffer.alloc(32 * 1024 + 1));
  assert.equal(host.violations.length, 1);
});

test('end() sends EOF; the peer may keep sending; close follows once both directions are done', async () => {
  const host = new FakeHost();
  const ch = channel(host);
  const got: Buffer[] = [];
  ch.on('data', (d: Buffer) => got.push(d));
  ch.end(Buffer.from('request'));
  await tick();
  assert.equal(host.eofs, 1);
  assert.equal(host.closes, 0);
  ch.onData(Buffer.from('response'));
  ch.onEof();
  await new Promise((r) => ch.on('close', r));
  assert.equal(Buffer.concat(got).toString(), 'response');
  assert.equal(host.closes, 1);
  assert.equal(host.finished, 0, 'the number stays reserved until the peer closes too');
  ch.onClose();
  assert.equal(host.closes, 1);
  assert.equal(host.finished, 1);
});

test('ending after the peer sent EOF sends EOF and CLOSE together, and CLOSE only once', async () => {
  const host = new FakeHost();
  const ch = channel(host);
  const got: Buffer[] = [];
  ch.on('data', (d: Buffer) => got.push(d));
  ch.onData(Buffer.from('response'));
  ch.onEof();
  await tick();
  assert.equal(host.closes, 0);
  let closesAtFinish = -1;
  ch.on('finish', () => (closesAtFinish = host.closes));
  ch.end();
  await new Promise((r) => ch.on('close', r));
  // Sent with the EOF, not a turn later by destroy(): the peer gets both in one transport write.
  assert.equal(closesAtFinish, 1);
  assert.equal(host.eofs, 1);
  assert.equal(host.closes, 1, 'destroy() does not send a second CLOSE');
  assert.equal(Buffer.concat(got).toString(), 'response');
  assert.equal(host.finished, 0);
  ch.onClose();
  assert.equal(host.closes, 1);
  assert.equal(host.finished, 1);
});

test("a peer's CLOSE without EOF ends the data cleanly after buffered bytes are read", async () => {
  const host = new FakeHost();
  const ch = channel(host);
  ch.pause();
  ch.onData(Buffer.from('last words'));
  ch.onClose();
  assert.equal(host.closes, 1, 'we answer CLOSE at once');
  assert.equal(host.finished, 1);
  assert.equal(ch.destroyed, false, 'buffered data is still readable');
  const got: Buffer[] = [];
  let ended = false;
  ch.on('data', (d: Buffer) => got.push(d));
  ch.on('end', () => (ended = true));
  ch.resume();
  await new Promise((r) => ch.on('close', r));
  assert.equal(Buffer.concat(got).toString(), 'last words');
  assert.equal(ended, true);
  // Writing after the peer closed goes nowhere, without an error event.
  ch.write('late');
  await tick();
  assert.equal(host.sentBytes, 0);
});

test('destroy() sends CLOSE once and drops a write waiting for window', async () => {
  const host = new FakeHost();
  const ch = channel(host, { remoteWindow: 0 });
  let callbackCalled = false;
  ch.write(Buffer.alloc(10), () => (callbackCalled = true));
  ch.destroy();
  ch.destroy();
  await tick();
  assert.equal(host.closes, 1);
  assert.equal(host.sentBytes, 0);
  assert.equal(callbackCalled, true);
  ch.onData(Buffer.alloc(5));
  assert.equal(host.violations.length, 0, 'late data after our CLOSE is ignored');
});

test('when the connection goes away the channel closes without sending anything', async () => {
  const host = new FakeHost();
  const ch = channel(host);
  const closed = new Promise((r) => ch.on('close', r));
  ch.onConnectionClosed();
  await closed;
  assert.equal(host.closes, 0);
  assert.equal(host.eofs, 0);
});
