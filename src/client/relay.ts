// The byte relay behind every SOCKS and HTTP CONNECT forward: client socket <-> tunnel stream, both ways.
// This is the benchmarked path, so it is stream.pipe and nothing per chunk: backpressure comes from pipe's
// pause/resume, bytes are counted from the client socket's own counters when the relay ends, and each direction's
// end is passed on separately (half-close) so request/response protocols that shut down their sending side
// still get their answer.

import type net from 'node:net';
import type { Duplex } from 'node:stream';

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
  const head = opts.head;
  const readBase = client.bytesRead - (head?.length ?? 0);
  const writtenBase = client.bytesWritten;
  let open = 2;
  let done = false;

  const finish = (): void => {
    if (done) return;
    done = true;
    opts.onDone?.({
      bytesUp: Math.max(0, client.bytesRead - readBase),
      bytesDown: Math.max(0, client.bytesWritten - writtenBase),
    });
  };

  const fail = (): void => {
    client.destroy();
    upstream.destroy();
  };

  // A side that closed without both of its directions having ended was aborted (reset, tunnel closed, destroyed):
  // nothing more can cross, so the other side goes too. A side that closed cleanly has already passed its end
  // on; the other side is left to flush and close by itself, but cannot send anywhere any more.
  const onClose = (closed: Duplex, other: Duplex): void => {
    open -= 1;
    if (open === 0) {
      finish();
      return;
    }
    if (!closed.readableEnded) {
      other.destroy();
      return;
    }
    if (!other.readableEnded) {
      other.unpipe(closed);
      other.end();
      if (other.writableFinished) other.destroy();
      else other.once('finish', () => other.destroy());
    }
  };

  client.on('error', fail);
  upstream.on('error', fail);
  client.once('close', () => onClose(client, upstream));
  upstream.once('close', () => onClose(upstream, client));

  // A stream that is already closed will never emit 'close' again.
  if (client.destroyed || upstream.destroyed) {
    fail();
    finish();
    return;
  }
  if (head && head.length > 0) upstream.write(head);
  client.pipe(upstream);
  upstream.pipe(client);
}
