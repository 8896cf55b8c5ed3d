// One SSH channel as a Node Duplex, with flow control in both directions and bounded memory:
// - inbound: the peer may send only what our window allows; we re-grant window only for bytes the consumer
//   has taken (and not while the consumer has paused us, e.g. a pipe whose destination is full), so at most one
//   window of data is ever buffered here;
// - outbound: we send only within the peer's window and packet size, and hold the write callback while the
//   connection's transport is congested, so a slow network pushes back on whoever writes into the channel.
// EOF and close follow OpenSSH: end() sends EOF (half-close) and the peer may keep sending; CHANNEL_CLOSE is
// sent once both directions are done or the stream is destroyed; a peer's CLOSE ends the readable side after
// the buffered data has been read.

import { Duplex } from 'node:stream';
import { MAX_UINT32 } from './wire.ts';

/** A server's receive window per channel: what a stalled upload may buffer (the reference uses 4 x 32 KiB). */
export const DEFAULT_CHANNEL_WINDOW = 256 * 1024;
/** Largest data payload we accept in one CHANNEL_DATA, and the most we put in one (OpenSSH and Go use 32 KiB). */
export const CHANNEL_MAX_PACKET = 32 * 1024;
/** Re-grant window once this fraction of it has been consumed: fewer WINDOW_ADJUST messages, no stalls. */
export const WINDOW_ADJUST_FRACTION = 4;
/** A peer's maximum packet size below this is refused: tiny packets would multiply our per-packet cost. */
export const MIN_PEER_MAX_PACKET = 256;
/** How much a writer may queue in a channel before write() returns false. */
export const CHANNEL_WRITE_BUFFER = 64 * 1024;

/** What a channel needs from the connection that carries it. */
export interface ChannelHost {
  sendChannelData(remoteId: number, data: Buffer): void;
  sendWindowAdjust(remoteId: number, bytes: number): void;
  sendChannelEof(remoteId: number): void;
  sendChannelClose(remoteId: number): void;
  /** True while the transport should not take more channel data. */
  isCongested(): boolean;
  /** Calls `channel.resumeWrites()` once the transport has drained. */
  waitForDrain(channel: ChannelStream): void;
  /** Both sides have sent CHANNEL_CLOSE: the channel number may be reused. */
  channelFinished(channel: ChannelStream): void;
  /** The peer broke the channel protocol; the connection must close. */
  protocolViolation(message: string): void;
  /** Adds to the connection's channel byte counters. */
  countChannelBytes(received: number, sent: number): void;
}

export interface ChannelParams {
  type: string;
  localId: number;
  remoteId: number;
  /** The window we granted in the open or confirmation message. */
  localWindow: number;
  /** The maximum packet size we announced. */
  localMaxPacket: number;
  remoteWindow: number;
  remoteMaxPacket: number;
}

export class ChannelStream extends Duplex {
  readonly type: string;
  readonly localId: number;
  readonly remoteId: number;
  /** Channel data bytes received from the peer. */
  bytesReceived = 0;
  /** Channel data bytes sent to the peer. */
  bytesSent = 0;

  private readonly host: ChannelHost;
  private readonly windowSize: number;
  private readonly maxIncoming: number;
  private readonly adjustThreshold: number;
  private readonly sendPacketLimit: number;
  /** Bytes the peer may still send us. */
  private localWindow: number;
  /** Bytes we may still send the peer. */
  private remoteWindow: number;

  private pendingChunk: Buffer | null = null;
  private pendingOffset = 0;
  private pendingCallback: ((err?: Error | null) => void) | null = null;

  private eofSent = false;
  private eofReceived = false;
  private closeSent = false;
  private closeReceived = false;
  private connectionGone = false;
  private finishReported = false;

  constructor(host: ChannelHost, params: ChannelParams) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: params.localWindow,
      writableHighWaterMark: CHANNEL_WRITE_BUFFER,
    });
    this.host = host;
    this.type = params.type;
    this.localId = params.localId;
    this.remoteId = params.remoteId;
    this.windowSize = params.localWindow;
    this.localWindow = params.localWindow;
    this.maxIncoming = params.localMaxPacket;
    this.adjustThreshold = Math.max(1, Math.floor(params.localWindow / WINDOW_ADJUST_FRACTION));
    this.remoteWindow = Math.min(params.remoteWindow, MAX_UINT32);
    this.sendPacketLimit = Math.min(params.remoteMaxPacket, CHANNEL_MAX_PACKET);
  }

  /** True once both sides have sent CHANNEL_CLOSE or the connection is gone. */
  get finished(): boolean {
    return this.connectionGone || (this.closeSent && this.closeReceived);
  }

  // ---- from the connection --------------------------------------------------------------------------------

  /** @internal CHANNEL_DATA for this channel. */
  onData(data: Buffer): void {
    if (this.closeSent || this.eofReceived) return; // late data after we closed, or a peer ignoring its own EOF
    if (data.length > this.localWindow || data.length > this.maxIncoming) {
      this.host.protocolViolation(
        `channel ${this.localId}: peer sent ${data.length} bytes beyond its window or packet size`,
      );
      return;
    }
    this.localWindow -= data.length;
    this.bytesReceived += data.length;
    this.host.countChannelBytes(data.length, 0);
    this.push(data);
    this.maybeGrantWindow();
  }

  /** @internal CHANNEL_EXTENDED_DATA: not used by port forwards; the window is consumed and given back. */
  onExtendedData(data: Buffer): void {
    if (this.closeSent || this.eofReceived) return;
    if (data.length > this.localWindow) {
      this.host.protocolViolation(`channel ${this.localId}: peer sent extended data beyond its window`);
      return;
    }
    if (data.length > 0) this.host.sendWindowAdjust(this.remoteId, data.length);
  }

  /** @internal CHANNEL_WINDOW_ADJUST. */
  onWindowAdjust(bytes: number): void {
    this.remoteWindow = Math.min(MAX_UINT32, this.remoteWindow + bytes);
    this.flush();
  }

  /** @internal CHANNEL_EOF. */
  onEof(): void {
    if (this.eofReceived || this.closeReceived) return;
    this.eofReceived = true;
    this.push(null);
  }

  /** @internal CHANNEL_CLOSE. */
  onClose(): void {
    if (this.closeReceived) return;
    this.closeReceived = true;
    if (!this.closeSent) {
      this.closeSent = true;
      this.host.sendChannelClose(this.remoteId);
    }
    // Nothing more can be sent: release a writer waiting for window.
    this.dropPendingWrite();
    this.reportFinished();
    // A close without EOF still ends the data cleanly (Go's Channel.Close sends no EOF); let the consumer read
    // what is buffered before the stream goes away.
    if (!this.eofReceived) {
      this.eofReceived = true;
      this.push(null);
    }
    if (this.readableEnded || this.readableLength === 0) this.destroy();
    else this.once('end', () => this.destroy());
  }

  /** @internal The connection closed: no more messages in either direction. */
  onConnectionClosed(): void {
    this.connectionGone = true;
    this.dropPendingWrite();
    this.destroy();
  }

  /** @internal The transport drained: continue a write that was waiting for it. */
  resumeWrites(): void {
    this.flush();
  }

  // ---- Duplex -----------------------------------------------------------------------------------------------

  override _read(): void {
    this.maybeGrantWindow();
  }

  // Node calls _read only once until the next push, but data is consumed through read() (also in flowing mode):
  // that is where freed buffer space turns into window for the peer.
  override read(size?: number): Buffer | null {
    const chunk = super.read(size) as Buffer | null;
    this.maybeGrantWindow();
    return chunk;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.closeSent || this.closeReceived || this.connectionGone) {
      // Like a socket whose peer has gone: the data goes nowhere. No error event, so a forgotten listener cannot
      // crash a server; owners follow 'close'.
      callback();
      return;
    }
    this.pendingChunk = chunk;
    this.pendingOffset = 0;
    this.pendingCallback = callback;
    this.flush();
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.eofSent && !this.closeSent && !this.closeReceived && !this.connectionGone) {
      this.eofSent = true;
      this.host.sendChannelEof(this.remoteId);
      // The peer has already ended its side, so nothing more can cross: CLOSE goes with the EOF (one packet
      // pair, one transport write) instead of a turn later from destroy(), which costs the peer another wakeup.
      if (this.eofReceived) {
        this.closeSent = true;
        this.host.sendChannelClose(this.remoteId);
      }
    }
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.dropPendingWrite();
    if (!this.connectionGone) {
      if (!this.closeSent) {
        this.closeSent = true;
        this.host.sendChannelClose(this.remoteId);
      }
      this.reportFinished();
    }
    callback(err);
  }

  // ---- internals --------------------------------------------------------------------------------------------

  private flush(): void {
    const chunk = this.pendingChunk;
    if (!chunk) return;
    while (this.pendingOffset < chunk.length) {
      if (this.host.isCongested()) {
        this.host.waitForDrain(this);
        return;
      }
      const n = Math.min(chunk.length - this.pendingOffset, this.remoteWindow, this.sendPacketLimit);
      if (n <= 0) return; // resumed by onWindowAdjust
      const piece =
        this.pendingOffset === 0 && n === chunk.length
          ? chunk
          : chunk.subarray(this.pendingOffset, this.pendingOffset + n);
      this.remoteWindow -= n;
      this.pendingOffset += n;
      this.bytesSent += n;
      this.host.countChannelBytes(0, n);
      this.host.sendChannelData(this.remoteId, piece);
    }
    const callback = this.pendingCallback;
    this.pendingChunk = null;
    this.pendingCallback = null;
    // May re-enter _write synchronously with the next buffered chunk.
    if (callback) callback();
  }

  /** Forgets a write that can no longer be sent; its callback succeeds for the reason given in _write. */
  private dropPendingWrite(): void {
    const callback = this.pendingCallback;
    this.pendingChunk = null;
    this.pendingCallback = null;
    if (callback) callback();
  }

  private reportFinished(): void {
    if (this.finishReported || !this.closeSent || !this.closeReceived) return;
    this.finishReported = true;
    this.host.channelFinished(this);
  }

  private maybeGrantWindow(): void {
    if (this.eofReceived || this.closeSent || this.connectionGone) return;
    // A consumer that paused us (a pipe whose destination is full) gets no more data until it resumes.
    if (this.readableFlowing === false) return;
    const room = this.windowSize - this.localWindow - this.readableLength;
    if (room < this.adjustThreshold) return;
    this.localWindow += room;
    this.host.sendWindowAdjust(this.remoteId, room);
  }
}
