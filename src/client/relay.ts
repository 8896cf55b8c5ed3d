// The byte relay behind every SOCKS and HTTP CONNECT forward: client socket <-> tunnel stream, both ways.
// This is the benchmarked path, so nothing is done per chunk beyond handing it on: a pump per direction
// (common/stream-pump.ts: pipe's backpressure without its per-connection set-up cost), bytes counted from the
// client socket's own counters when the relay ends, and each direction's end passed on separately (half-close)
// so request/response protocols that shut down their sending side still get their answer.

import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { pump, type Pump } from '../common/stream-pump.ts';

export interface RelayResult {
  /** Bytes taken from the client and sent into the forward. */
  bytesUp: number;
  /** Bytes taken from the forward and written to the client. */
  bytesDown: number;
}

export interface RelayOptions {
  /** Bytes the client sent after its request and before the relay started; they go upstream first. */
  head?: Buffer;
  /** Called once, when both streams are closed. */
  onDone?: (result: RelayResult) => void;
}

/**
 * Relays between `client` (a TCP socket from a local application) and `upstream` (a forward from the dialer)
 * until both directions have ended or either side fails; a failure on one side destroys the other.
 * Both streams must allow half-open operation (net: allowHalfOpen) for half-close to work.
 */
export function relay(client: net.Socket, upstream: Duplex, opts: RelayOptions = {}): void {
  new Relay(client, upstream, opts).start();
}

/** One relay's state. A class with its listeners assigned once: this is set up for every new connection. */
class Relay {
  private readonly readBase: number;
  private readonly writtenBase: number;
  private open = 2;
  private done = false;
  // Set once both directions are pumping.
  private up: Pump | null = null;
  private down: Pump | null = null;
  private readonly fail: () => void;

  constructor(
    private readonly client: net.Socket,
    private readonly upstream: Duplex,
    private readonly opts: RelayOptions,
  ) {
    this.readBase = client.bytesRead - (opts.head?.length ?? 0);
    this.writtenBase = client.bytesWritten;
    this.fail = () => {
      client.destroy();
      upstream.destroy();
    };
  }

  start(): void {
    const { client, upstream } = this;
    client.on('error', this.fail);
    upstream.on('error', this.fail);
    client.once('close', () => this.onClose(client, upstream));
    upstream.once('close', () => this.onClose(upstream, client));

    // A stream that is already closed will never emit 'close' again.
    if (client.destroyed || upstream.destroyed) {
      this.fail();
      this.finish();
      return;
    }
    const head = this.opts.head;
    if (head && head.length > 0) upstream.write(head);
    this.up = pump(client, upstream);
    this.down = pump(upstream, client);
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    const { client } = this;
    this.opts.onDone?.({
      bytesUp: Math.max(0, client.bytesRead - this.readBase),
      bytesDown: Math.max(0, client.bytesWritten - this.writtenBase),
    });
  }

  // A side that closed without both of its directions having ended was aborted (reset, tunnel closed, destroyed):
  // nothing more can cross, so the other side goes too. A side that closed cleanly has already passed its end
  // on; the other side is left to flush and close by itself, but cannot send anywhere any more.
  private onClose(closed: Duplex, other: Duplex): void {
    this.open -= 1;
    if (this.open === 0) {
      this.finish();
      return;
    }
    if (!closed.readableEnded) {
      other.destroy();
      return;
    }
    if (!other.readableEnded) {
      (other === this.upstream ? this.down : this.up)?.stop();
      other.end();
      if (other.writableFinished) other.destroy();
      else other.once('finish', () => other.destroy());
    }
  }
}
