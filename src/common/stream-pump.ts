// One direction of a byte relay: chunks from a readable go to a writable, with backpressure, and the readable's
// end is passed on as the writable's end. This is what stream.pipe does for a single destination, without its
// bookkeeping (a dozen listeners across both streams, 'pipe'/'unpipe' events, per-destination drain counters):
// the SOCKS/HTTP proxies and the tunnel server set up and tear down two of these for every forwarded connection,
// on the path each new connection waits on, so what they cost is paid in connection latency.
// Errors are not handled here: the relays that use pumps listen for 'error' and 'close' on both streams.
//
// The listeners are assigned in the constructor rather than declared as named closures: the development runner
// (tsx) keeps function names by calling Object.defineProperty on every named closure as it is created, which
// costs microseconds per closure until the code is optimised.

import type { Readable, Writable } from 'node:stream';

export class Pump {
  private waitingForDrain = false;
  private drainListening = false;
  private stopped = false;
  private readonly onData: (chunk: Buffer) => void;
  private readonly onDrain: () => void;
  private readonly onEnd: () => void;

  constructor(
    private readonly src: Readable,
    private readonly dst: Writable,
  ) {
    this.onData = (chunk) => {
      if (!this.dst.write(chunk) && !this.waitingForDrain) {
        this.waitingForDrain = true;
        this.src.pause();
        // Added once and kept, as pipe() does: a busy relay waits for 'drain' over and over.
        if (!this.drainListening) {
          this.drainListening = true;
          this.dst.on('drain', this.onDrain);
        }
      }
    };
    this.onDrain = () => {
      if (!this.waitingForDrain) return;
      this.waitingForDrain = false;
      if (!this.stopped) this.src.resume();
    };
    this.onEnd = () => {
      if (this.stopped) return;
      this.stop();
      this.dst.end();
    };
  }

  /** Starts moving data (and `src` flowing). */
  start(): this {
    if (this.src.readableEnded) {
      // Its 'end' has been emitted already and will not come again.
      process.nextTick(this.onEnd);
      return this;
    }
    this.src.on('data', this.onData);
    this.src.once('end', this.onEnd);
    // A source paused by its owner (the SOCKS proxy pauses the client while it dials) is not restarted by adding
    // a 'data' listener; pipe() resumes it too.
    if (!this.src.readableFlowing) this.src.resume();
    return this;
  }

  /** Stops moving data (and will not pass the end on); the source is paused unless others read it. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.src.off('data', this.onData);
    this.src.off('end', this.onEnd);
    this.waitingForDrain = false;
    if (this.drainListening) {
      this.drainListening = false;
      this.dst.off('drain', this.onDrain);
    }
    // As unpipe() does: a flowing source with nobody listening would drop what it reads.
    if (this.src.listenerCount('data') === 0) this.src.pause();
  }
}

/** Moves everything `src` emits into `dst` and ends `dst` when `src` ends. Starts `src` flowing. */
export function pump(src: Readable, dst: Writable): Pump {
  return new Pump(src, dst).start();
}
