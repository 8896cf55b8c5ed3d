// The part of an SSH connection both roles share, on top of ssh2's Protocol (key exchange, ciphers, message
// parsing): the channel table and flow control, global requests in both directions, byte counters, and how a
// connection ends. server-connection.ts and client-connection.ts add authentication and their own channel
// opening rules.
//
// Memory is bounded per connection: channels hold at most one window each (channel-stream.ts), inbound global
// requests are queued up to a count and byte limit and answered one at a time in order (as the reference server
// does), and channel data is not handed to ssh2 while the transport has more than CONNECTION_SEND_BUFFER_LIMIT
// unsent or a key exchange is queueing packets (ssh2 itself writes without waiting for the transport to drain).

import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import Protocol, {
  type MessageHandlers,
  type NegotiatedAlgorithms,
  type ProtocolConfig,
} from 'ssh2/lib/protocol/Protocol.js';
import ssh2Crypto from 'ssh2/lib/protocol/crypto.js';
import { describeError, isPosternError, PosternError } from '../common/errors.ts';
import {
  CHANNEL_MAX_PACKET,
  ChannelStream,
  MIN_PEER_MAX_PACKET,
  type ChannelHost,
} from './channel-stream.ts';
import { HybridKexSupport } from './hybrid-kex.ts';
import { tuneProtocol, type TuningReport } from './ssh2-tuning.ts';
import {
  DISCONNECT_REASON,
  MAX_GLOBAL_REQUEST_PAYLOAD,
  MAX_UINT32,
  MSG_CHANNEL_OPEN,
  MSG_KEXINIT,
  parseChannelOpen,
  sendChannelOpen,
  sendGlobalRequest,
  type ChannelOpenMessage,
} from './wire.ts';

/** Channel data is held back while the transport has this much unsent (or its high-water mark, if larger). */
export const CONNECTION_SEND_BUFFER_LIMIT = 256 * 1024;
/** Inbound global requests waiting for an answer; a peer that queues more is cut off. */
export const MAX_QUEUED_GLOBAL_REQUESTS = 32;
export const MAX_QUEUED_GLOBAL_REQUEST_BYTES = 1024 * 1024;
/** Our own global requests awaiting a reply. */
export const MAX_PENDING_OUTBOUND_REQUESTS = 64;
/** Bytes a peer may send before its identification line (the client tolerates greeting lines). */
export const MAX_PRE_IDENT_BYTES = 64 * 1024;
/** Re-key after this much sent under one key, as Go's crypto/ssh does by default. */
export const REKEY_AFTER_BYTES = 1024 * 1024 * 1024;
/** After a graceful close, how long the transport may take to flush before it is destroyed. */
export const CLOSE_LINGER_MS = 2000;
export const DEFAULT_MAX_CHANNELS = 1024;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
export const DEFAULT_CHANNEL_OPEN_TIMEOUT_MS = 30_000;
/** Turns to wait for the OSSH obfuscator to hand its last bytes to the socket before it is detached. */
export const MAX_DETACH_ATTEMPTS = 100;

export interface ConnectionStats {
  /** Bytes read from and written to the transport (SSH framing and encryption included). */
  transportBytesRead: number;
  transportBytesWritten: number;
  /** Channel data bytes received from and sent to the peer, over all channels. */
  channelBytesReceived: number;
  channelBytesSent: number;
  openChannels: number;
}

export interface SshConnectionEvents {
  /** The connection ended; null for a normal close by either side. */
  close: [error: PosternError | null];
  /** A key exchange finished (the first one and every re-key). */
  handshake: [negotiated: NegotiatedAlgorithms];
  /** Authentication succeeded. */
  authenticated: [];
}

/** A refused channel open, with the peer's reason code (see CHANNEL_OPEN_FAILURE). */
export class ChannelOpenError extends PosternError {
  readonly reason: number;
  constructor(reason: number, description: string) {
    super('REFUSED', `SSH channel open refused (reason ${reason}${description ? `: ${description}` : ''})`);
    this.name = 'ChannelOpenError';
    this.reason = reason;
  }
}

/** The Protocol settings that differ by role. */
export type RoleProtocolConfig = Pick<ProtocolConfig, 'server' | 'hostKeys' | 'ident' | 'offer'>;

export interface ConnectionSettings {
  role: 'client' | 'server';
  maxChannels: number;
  /** Time from start until authentication succeeds. */
  handshakeTimeoutMs: number;
  /** Our receive window per channel. */
  channelWindow: number;
}

interface PendingOpen {
  kind: 'opening';
  localId: number;
  type: string;
  resolve(channel: ChannelStream): void;
  reject(err: PosternError): void;
  timer: NodeJS.Timeout | null;
}

/** A channel number reserved while our side decides on an incoming open. */
interface Reserved {
  kind: 'reserved';
  localId: number;
}

type Slot = ChannelStream | PendingOpen | Reserved;

interface OutboundRequest {
  resolve(payload: Buffer): void;
  reject(err: PosternError): void;
  settled: boolean;
  timer: NodeJS.Timeout | null;
}

interface InboundRequest {
  name: string;
  wantReply: boolean;
  /** null when ssh2 parsed the data as one of the standard requests we never serve. */
  payload: Buffer | null;
}

export interface RequestOptions {
  /** Reject after this long; the reply, if it comes later, is still consumed in order. */
  timeoutMs?: number;
}

export interface OpenChannelOptions {
  timeoutMs?: number;
}

export abstract class SshConnection extends EventEmitter<SshConnectionEvents> implements ChannelHost {
  /** Algorithms of the last key exchange, null before the first one completes. */
  negotiated: NegotiatedAlgorithms | null = null;
  /** The peer's identification string ("SSH-2.0-..."), once received. */
  peerVersion: string | null = null;
  /** Why the connection ended: null while open or after a normal close. */
  closeError: PosternError | null = null;
  /** Resolves when the connection has closed. */
  readonly closed: Promise<PosternError | null>;
  /** How many ssh2 cipher objects got the padding pool and the 256 KiB packet limit (see ssh2-tuning.ts). */
  readonly tuning: TuningReport;
  /** The mlkem768x25519-sha256 key exchange ssh2 lacks (see hybrid-kex.ts). */
  readonly hybridKex: HybridKexSupport;

  protected readonly proto: Protocol;
  protected readonly settings: ConnectionSettings;
  protected authenticated = false;
  protected isClosed = false;

  /** The stream SSH runs over: the socket, or the OSSH obfuscator until it is detached (see detachTransport). */
  private currentTransport: Duplex;
  /** Whether SSH reads the transport yet (begin() has run). */
  private reading = false;
  private detachAttempts = 0;
  private readonly onTransportChunk = (chunk: Buffer): void => this.onTransportData(chunk);
  private readonly onTransportError = (err: Error): void =>
    this.fail(new PosternError('IO', `SSH transport error: ${err.message}`));
  private readonly onTransportEnd = (): void => this.onTransportGone();
  private readonly onTransportDrain = (): void => this.resumeDrainWaiters();
  private readonly slots = new Map<number, Slot>();
  private nextChannelId = 0;
  private readonly drainWaiters = new Set<ChannelStream>();
  private readonly sendBufferLimit: number;
  private readonly outbound: OutboundRequest[] = [];
  private readonly inbound: InboundRequest[] = [];
  private inboundBytes = 0;
  private servingInbound = false;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private lingerTimer: NodeJS.Timeout | null = null;
  private sawHeader = false;
  private preIdentBytes = 0;
  private bytesSinceKex = 0;
  private rekeyScheduled = false;
  private resolveClosed!: (err: PosternError | null) => void;
  private readonly stats: ConnectionStats = {
    transportBytesRead: 0,
    transportBytesWritten: 0,
    channelBytesReceived: 0,
    channelBytesSent: 0,
    openChannels: 0,
  };

  constructor(transport: Duplex, settings: ConnectionSettings, config: RoleProtocolConfig) {
    super();
    this.currentTransport = transport;
    this.settings = settings;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.sendBufferLimit = Math.max(CONNECTION_SEND_BUFFER_LIMIT, transport.writableHighWaterMark);
    // Nagle plus delayed ACKs stalls every small message (channel opens, API requests) by ~40 ms.
    if (transport instanceof Socket) transport.setNoDelay(true);

    this.proto = new Protocol({
      ...config,
      onWrite: (data) => this.writeToTransport(data),
      onError: (err) => this.fail(this.describeProtocolError(err)),
      onHeader: (header) => {
        this.sawHeader = true;
        this.peerVersion = header.identRaw;
      },
      onHandshakeComplete: (negotiated) => {
        this.negotiated = negotiated;
        this.bytesSinceKex = 0;
        this.emit('handshake', negotiated);
        this.onKeyExchangeDone();
        // Channel data held back while packets were being queued for the key exchange can flow again.
        this.resumeDrainWaiters();
      },
      ...(settings.role === 'client' ? { hostVerifier: (key: Buffer) => this.verifyHostKey(key) } : {}),
      messageHandlers: this.guardHandlers({ ...this.commonHandlers(), ...this.roleHandlers() }),
    });
    this.hybridKex = new HybridKexSupport(this.proto);
    this.tuning = tuneProtocol(this.proto, (decipher) => this.hybridKex.watchDecipher(decipher));
    // ssh2 drops the type-specific data of channel types it does not know: we parse CHANNEL_OPEN ourselves.
    // A re-key's KEXINIT comes this way too and may need the hybrid key exchange.
    const dispatch = this.proto._onPayload;
    this.proto._onPayload = (payload: Buffer): unknown => {
      if (this.isClosed) return Infinity;
      const type = payload.length > 0 ? payload[0] : -1;
      const ret =
        type === MSG_CHANNEL_OPEN
          ? this.onChannelOpenPayload(payload)
          : type === MSG_KEXINIT
            ? this.hybridKex.onKexinit(payload, dispatch)
            : dispatch(payload);
      // A handler closed the connection: stop parsing the rest of the chunk.
      return this.isClosed ? Infinity : ret;
    };

    this.listenToTransport(transport);
    // OSSH obfuscates only up to the first NEWKEYS each way; after that the obfuscator passes bytes through
    // unchanged, so it is taken out of the path (one stream hop less for every packet, both ways).
    if (isDetachable(transport)) transport.once('passthrough', () => this.scheduleDetach());
  }

  /** The byte stream SSH runs over (after an OSSH handshake, the socket under the obfuscator). */
  get transport(): Duplex {
    return this.currentTransport;
  }

  /** Counters for the tunnel's statistics. */
  getStats(): ConnectionStats {
    return { ...this.stats, openChannels: this.countOpenChannels() };
  }

  /** Whether authentication has succeeded. */
  get isAuthenticated(): boolean {
    return this.authenticated;
  }

  /** Ends the connection normally (SSH_MSG_DISCONNECT, then the transport is ended). */
  close(): void {
    this.shutdown(null, true);
  }

  /**
   * Sends a global request and resolves with the reply's payload (empty when the reply has none). Rejects with
   * REFUSED when the peer answers REQUEST_FAILURE, CLOSED when the connection ends first.
   */
  request(name: string, payload: Buffer = Buffer.alloc(0), opts: RequestOptions = {}): Promise<Buffer> {
    const refusal = this.checkCanSend();
    if (refusal) return Promise.reject(refusal);
    if (this.outbound.length >= MAX_PENDING_OUTBOUND_REQUESTS) {
      return Promise.reject(new PosternError('REFUSED', 'too many SSH global requests awaiting a reply'));
    }
    return new Promise((resolve, reject) => {
      sendGlobalRequest(this.proto, name, true, payload);
      this.flushWrites();
      const entry: OutboundRequest = { resolve, reject, settled: false, timer: null };
      if (opts.timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          entry.settled = true;
          reject(new PosternError('TIMEOUT', `no reply to SSH request ${name} within ${opts.timeoutMs} ms`));
        }, opts.timeoutMs);
      }
      this.outbound.push(entry);
    });
  }

  /** Starts a new key exchange (one also starts by itself after REKEY_AFTER_BYTES sent). */
  rekey(): void {
    if (this.isClosed || this.negotiated === null || this.proto._kexinit !== undefined) return;
    this.bytesSinceKex = 0;
    this.proto.rekey();
  }

  /** Sends a global request that wants no reply. */
  notify(name: string, payload: Buffer = Buffer.alloc(0)): void {
    const refusal = this.checkCanSend();
    if (refusal) throw refusal;
    sendGlobalRequest(this.proto, name, false, payload);
  }

  // ---- for subclasses -----------------------------------------------------------------------------------------

  /** Starts the protocol once ssh2's crypto is ready. */
  protected begin(): void {
    this.handshakeTimer = setTimeout(
      () =>
        this.fail(
          new PosternError(
            'TIMEOUT',
            `SSH handshake not finished within ${this.settings.handshakeTimeoutMs} ms`,
          ),
        ),
      this.settings.handshakeTimeoutMs,
    );
    ssh2Crypto.init.then(
      () => {
        if (this.isClosed) return;
        this.proto.start?.();
        this.reading = true;
        this.transport.on('data', this.onTransportChunk);
      },
      (err: unknown) =>
        this.fail(new PosternError('SSH_PROTOCOL', `SSH crypto unavailable: ${describeError(err)}`)),
    );
  }

  protected markAuthenticated(): void {
    this.authenticated = true;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.emit('authenticated');
  }

  /** Handlers for the messages only this role receives (authentication). Called from the base constructor. */
  protected abstract roleHandlers(): MessageHandlers;

  /** A key exchange finished (the first one, or a re-key). */
  protected onKeyExchangeDone(): void {}

  /** Client only: whether the server's host key blob is the expected one. */
  protected verifyHostKey(_key: Buffer): boolean {
    return false;
  }

  /** Answers an inbound global request: a reply payload, or null to refuse. */
  protected abstract serveGlobalRequest(name: string, payload: Buffer): Promise<Buffer | null>;

  /** Decides on an inbound CHANNEL_OPEN (already parsed and checked for size limits). */
  protected abstract onChannelOpen(msg: ChannelOpenMessage): void;

  /** Turns an ssh2 error into ours (the client maps a host key refusal). */
  protected describeProtocolError(err: Error): PosternError {
    return isPosternError(err) ? err : new PosternError('SSH_PROTOCOL', `SSH protocol error: ${err.message}`);
  }

  /** Sends DISCONNECT with `reason` and closes with `error`. */
  protected disconnect(reason: number, error: PosternError): void {
    this.sendDisconnect(reason);
    this.fail(error);
  }

  /** Closes the connection because of `error` (the transport is destroyed, not flushed). */
  protected fail(error: PosternError): void {
    this.shutdown(error, false);
  }

  /** Reserves a channel number for an incoming open, or null when the connection is at its channel limit. */
  protected reserveChannel(): number | null {
    const id = this.allocateChannelId();
    if (id === null) return null;
    this.slots.set(id, { kind: 'reserved', localId: id });
    return id;
  }

  protected releaseReservation(localId: number): void {
    const slot = this.slots.get(localId);
    if (slot && !(slot instanceof ChannelStream) && slot.kind === 'reserved') this.slots.delete(localId);
  }

  /** Confirms an incoming open on a reserved number and returns its stream. */
  protected acceptReserved(localId: number, msg: ChannelOpenMessage): ChannelStream {
    const channel = new ChannelStream(this, {
      type: msg.type,
      localId,
      remoteId: msg.senderId,
      localWindow: this.settings.channelWindow,
      localMaxPacket: CHANNEL_MAX_PACKET,
      remoteWindow: msg.initialWindow,
      remoteMaxPacket: msg.maxPacket,
    });
    this.slots.set(localId, channel);
    this.proto.channelOpenConfirm(msg.senderId, localId, this.settings.channelWindow, CHANNEL_MAX_PACKET);
    this.flushWrites();
    return channel;
  }

  protected rejectOpen(senderId: number, reason: number, description = ''): void {
    if (this.isClosed) return;
    this.proto.channelOpenFail(senderId, reason, description);
    this.flushWrites();
  }

  /** Opens a channel of any type; resolves once the peer confirms it. */
  protected openChannel(type: string, extra: Buffer, opts: OpenChannelOptions = {}): Promise<ChannelStream> {
    const refusal = this.checkCanSend();
    if (refusal) return Promise.reject(refusal);
    const localId = this.allocateChannelId();
    if (localId === null) {
      return Promise.reject(
        new PosternError('REFUSED', `SSH connection already has ${this.settings.maxChannels} channels`),
      );
    }
    return new Promise((resolve, reject) => {
      sendChannelOpen(this.proto, type, localId, this.settings.channelWindow, CHANNEL_MAX_PACKET, extra);
      this.flushWrites();
      const pending: PendingOpen = { kind: 'opening', localId, type, resolve, reject, timer: null };
      const timeoutMs = opts.timeoutMs ?? DEFAULT_CHANNEL_OPEN_TIMEOUT_MS;
      pending.timer = setTimeout(() => {
        // The number stays reserved until the peer answers, so a late confirmation is closed properly.
        pending.reject(new PosternError('TIMEOUT', `SSH channel open not answered within ${timeoutMs} ms`));
        pending.resolve = (channel) => channel.destroy();
        pending.reject = () => {};
      }, timeoutMs);
      // The connection's transport keeps the process alive; an unreferenced timer spares Node a timer list per
      // channel open.
      pending.timer.unref();
      this.slots.set(localId, pending);
    });
  }

  protected checkCanSend(): PosternError | null {
    if (this.isClosed) return new PosternError('CLOSED', 'SSH connection is closed');
    if (!this.authenticated)
      return new PosternError('BAD_ARGUMENT', 'SSH connection is not authenticated yet');
    return null;
  }

  protected sendDisconnect(reason: number): void {
    if (this.isClosed || this.proto._destruct === undefined || !this.sawHeader) return;
    try {
      this.proto.disconnect(reason);
    } catch {
      // The transport is already unusable; closing is all that is left.
    }
  }

  // ---- ChannelHost ------------------------------------------------------------------------------------------

  sendChannelData(remoteId: number, data: Buffer): void {
    if (!this.isClosed) this.proto.channelData(remoteId, data);
  }
  sendWindowAdjust(remoteId: number, bytes: number): void {
    if (!this.isClosed) this.proto.channelWindowAdjust(remoteId, bytes);
  }
  sendChannelEof(remoteId: number): void {
    if (!this.isClosed) this.proto.channelEOF(remoteId);
  }
  sendChannelClose(remoteId: number): void {
    if (!this.isClosed) this.proto.channelClose(remoteId);
  }
  isCongested(): boolean {
    return this.proto._kexinit !== undefined || this.transport.writableLength >= this.sendBufferLimit;
  }
  waitForDrain(channel: ChannelStream): void {
    this.drainWaiters.add(channel);
  }
  channelFinished(channel: ChannelStream): void {
    if (this.slots.get(channel.localId) === channel) this.slots.delete(channel.localId);
    this.drainWaiters.delete(channel);
  }
  protocolViolation(message: string): void {
    this.disconnect(DISCONNECT_REASON.PROTOCOL_ERROR, new PosternError('SSH_PROTOCOL', message));
  }
  countChannelBytes(received: number, sent: number): void {
    this.stats.channelBytesReceived += received;
    this.stats.channelBytesSent += sent;
  }

  // ---- internals --------------------------------------------------------------------------------------------

  private commonHandlers(): MessageHandlers {
    return {
      DISCONNECT: (_p, reason, description) => {
        if (reason === DISCONNECT_REASON.BY_APPLICATION) this.shutdown(null, false);
        else
          this.fail(
            new PosternError(
              'CLOSED',
              `peer disconnected (reason ${reason}${description ? `: ${description}` : ''})`,
            ),
          );
      },
      GLOBAL_REQUEST: (_p, name, wantReply, data) => this.onGlobalRequest(name, wantReply, data),
      REQUEST_SUCCESS: (_p, data) => this.onRequestReply(data ?? Buffer.alloc(0)),
      REQUEST_FAILURE: () => this.onRequestReply(null),
      CHANNEL_OPEN_CONFIRMATION: (_p, info) =>
        this.onOpenConfirmation(info.recipient, info.sender, info.window, info.packetSize),
      CHANNEL_OPEN_FAILURE: (_p, recipient, reason, description) =>
        this.onOpenFailure(recipient, reason, description),
      CHANNEL_WINDOW_ADJUST: (_p, recipient, amount) => this.channel(recipient)?.onWindowAdjust(amount),
      CHANNEL_DATA: (_p, recipient, data) => this.channel(recipient)?.onData(data),
      CHANNEL_EXTENDED_DATA: (_p, recipient, data) => this.channel(recipient)?.onExtendedData(data),
      CHANNEL_EOF: (_p, recipient) => this.channel(recipient)?.onEof(),
      CHANNEL_CLOSE: (_p, recipient) => this.channel(recipient)?.onClose(),
      CHANNEL_REQUEST: (_p, recipient, _type, wantReply) => {
        // Port-forward channels take no requests; the reference answers them with failure too.
        const channel = this.channel(recipient);
        if (channel && wantReply && !this.isClosed) this.proto.channelFailure(channel.remoteId);
      },
      CHANNEL_SUCCESS: () => {},
      CHANNEL_FAILURE: () => {},
    };
  }

  /** Makes every handler a no-op once the connection is closed (ssh2 may still be inside a parse loop). */
  private guardHandlers(handlers: MessageHandlers): MessageHandlers {
    const guarded: Record<string, unknown> = {};
    for (const [name, handler] of Object.entries(handlers) as [string, (...args: unknown[]) => void][]) {
      guarded[name] = (...args: unknown[]) => {
        if (!this.isClosed) handler(...args);
      };
    }
    return guarded as MessageHandlers;
  }

  /** The peer closed the transport: normal after authentication (the reference never sends DISCONNECT). */
  private onTransportGone(): void {
    if (this.authenticated) this.shutdown(null, false);
    else this.fail(new PosternError('CLOSED', 'SSH transport closed before authentication'));
  }

  private channel(localId: number): ChannelStream | undefined {
    const slot = this.slots.get(localId);
    return slot instanceof ChannelStream ? slot : undefined;
  }

  private countOpenChannels(): number {
    let n = 0;
    for (const slot of this.slots.values()) if (slot instanceof ChannelStream) n++;
    return n;
  }

  private allocateChannelId(): number | null {
    if (this.slots.size >= this.settings.maxChannels) return null;
    // Numbers are reused only after both sides have closed the channel (the slot is deleted then).
    for (;;) {
      const id = this.nextChannelId;
      this.nextChannelId = id === MAX_UINT32 ? 0 : id + 1;
      if (!this.slots.has(id)) return id;
    }
  }

  private onTransportData(chunk: Buffer): void {
    if (this.isClosed) return;
    this.stats.transportBytesRead += chunk.length;
    if (!this.sawHeader) {
      this.preIdentBytes += chunk.length;
      if (this.preIdentBytes > MAX_PRE_IDENT_BYTES) {
        this.fail(
          new PosternError(
            'SSH_PROTOCOL',
            `no SSH identification line in the first ${MAX_PRE_IDENT_BYTES} bytes`,
          ),
        );
        return;
      }
    }
    try {
      this.proto.parse(chunk, 0, chunk.length);
    } catch (err) {
      this.fail(new PosternError('SSH_PROTOCOL', `bad SSH input: ${describeError(err)}`));
    }
  }

  private writeToTransport(data: Buffer): void {
    if (this.transport.destroyed || !this.transport.writable) return;
    this.stats.transportBytesWritten += data.length;
    // ssh2 writes every packet separately; gathering one turn's packets into a single writev halves the kernel's
    // cost per byte on a busy connection, for no added latency. Packets the peer is waiting on (channel opens
    // and their answers) are flushed at once instead: see flushWrites.
    if (!this.corked) {
      this.corked = true;
      this.transport.cork();
      if (!this.uncorkScheduled) {
        this.uncorkScheduled = true;
        process.nextTick(this.onUncorkTick);
      }
    }
    this.transport.write(data);
    this.bytesSinceKex += data.length;
    if (this.bytesSinceKex >= REKEY_AFTER_BYTES && !this.rekeyScheduled && this.negotiated) {
      // Not from inside ssh2's send path: start the key exchange on the next turn.
      this.rekeyScheduled = true;
      setImmediate(() => {
        this.rekeyScheduled = false;
        this.rekey();
      });
    }
  }

  private corked = false;
  private uncorkScheduled = false;
  private readonly onUncorkTick = (): void => {
    this.uncorkScheduled = false;
    this.flushWrites();
  };

  /**
   * Hands the packets gathered so far to the transport now rather than at the end of this turn. Used after
   * packets a peer is blocked on (CHANNEL_OPEN, its confirmation or failure, global requests): whatever the
   * rest of the turn does (setting up the forward's relay, timers, promise callbacks) then runs while the packet
   * is already on its way.
   */
  protected flushWrites(): void {
    if (!this.corked) return;
    this.corked = false;
    this.transport.uncork();
  }

  private listenToTransport(t: Duplex): void {
    t.on('error', this.onTransportError);
    t.on('end', this.onTransportEnd);
    t.on('close', this.onTransportEnd);
    t.on('drain', this.onTransportDrain);
    if (this.reading) t.on('data', this.onTransportChunk);
  }

  private stopListeningToTransport(t: Duplex): void {
    t.off('error', this.onTransportError);
    t.off('end', this.onTransportEnd);
    t.off('close', this.onTransportEnd);
    t.off('drain', this.onTransportDrain);
    t.off('data', this.onTransportChunk);
  }

  /** Outside the obfuscator's and ssh2's own call stacks. */
  private scheduleDetach(): void {
    setImmediate(() => this.detachTransport());
  }

  /**
   * Replaces a finished OSSH obfuscator with the socket under it. Waits while the obfuscator still holds bytes to
   * write; keeps it (correct, only slower) if it cannot be detached.
   */
  private detachTransport(): void {
    const obfuscator = this.currentTransport;
    if (this.isClosed || !isDetachable(obfuscator) || obfuscator.destroyed) return;
    if (!obfuscator.obfuscationFinished) return;
    this.flushWrites();
    if (obfuscator.writableLength > 0) {
      if (++this.detachAttempts < MAX_DETACH_ATTEMPTS) this.scheduleDetach();
      return;
    }
    this.stopListeningToTransport(obfuscator);
    let socket: Duplex;
    try {
      socket = obfuscator.detach();
    } catch {
      this.listenToTransport(obfuscator);
      return;
    }
    this.currentTransport = socket;
    this.listenToTransport(socket);
  }

  private resumeDrainWaiters(): void {
    if (this.drainWaiters.size === 0) return;
    const waiters = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const channel of waiters) {
      if (this.isCongested()) {
        this.drainWaiters.add(channel);
        continue;
      }
      channel.resumeWrites();
    }
  }

  private onChannelOpenPayload(payload: Buffer): unknown {
    let msg: ChannelOpenMessage;
    try {
      msg = parseChannelOpen(payload);
    } catch (err) {
      this.protocolViolation(`malformed CHANNEL_OPEN: ${describeError(err)}`);
      return Infinity; // stop parsing this chunk, as ssh2 does after a fatal error
    }
    if (msg.maxPacket < MIN_PEER_MAX_PACKET) {
      this.rejectOpen(msg.senderId, 4 /* RESOURCE_SHORTAGE */, 'maximum packet size too small');
      return undefined;
    }
    this.onChannelOpen(msg);
    return this.isClosed ? Infinity : undefined;
  }

  private onOpenConfirmation(localId: number, remoteId: number, window: number, packetSize: number): void {
    const slot = this.slots.get(localId);
    if (!slot || slot instanceof ChannelStream || slot.kind !== 'opening') return;
    if (slot.timer) clearTimeout(slot.timer);
    const channel = new ChannelStream(this, {
      type: slot.type,
      localId,
      remoteId,
      localWindow: this.settings.channelWindow,
      localMaxPacket: CHANNEL_MAX_PACKET,
      remoteWindow: window,
      remoteMaxPacket: packetSize,
    });
    this.slots.set(localId, channel);
    if (packetSize < MIN_PEER_MAX_PACKET) {
      channel.destroy();
      slot.reject(new PosternError('SSH_PROTOCOL', `peer's maximum packet size ${packetSize} is too small`));
      return;
    }
    slot.resolve(channel);
  }

  private onOpenFailure(localId: number, reason: number, description: string): void {
    const slot = this.slots.get(localId);
    if (!slot || slot instanceof ChannelStream || slot.kind !== 'opening') return;
    if (slot.timer) clearTimeout(slot.timer);
    this.slots.delete(localId);
    slot.reject(new ChannelOpenError(reason, description));
  }

  private onGlobalRequest(name: string, wantReply: boolean, data: unknown): void {
    if (!this.authenticated) {
      // Nothing is served before authentication; no earlier request can be waiting for its reply.
      if (wantReply) this.proto.requestFailure();
      return;
    }
    const payload = Buffer.isBuffer(data) ? data : null;
    const size = payload ? payload.length : 0;
    if (
      this.inbound.length >= MAX_QUEUED_GLOBAL_REQUESTS ||
      this.inboundBytes + size > MAX_QUEUED_GLOBAL_REQUEST_BYTES
    ) {
      this.protocolViolation('too many SSH global requests waiting for a reply');
      return;
    }
    this.inbound.push({ name, wantReply, payload });
    this.inboundBytes += size;
    if (!this.servingInbound) void this.serveInbound();
  }

  /** Serves inbound requests one at a time: replies must go out in request order (RFC 4254 section 4). */
  private async serveInbound(): Promise<void> {
    this.servingInbound = true;
    try {
      for (let req = this.inbound.shift(); req && !this.isClosed; req = this.inbound.shift()) {
        this.inboundBytes -= req.payload ? req.payload.length : 0;
        let reply: Buffer | null = null;
        if (req.payload) {
          try {
            reply = await this.serveGlobalRequest(req.name, req.payload);
          } catch {
            reply = null;
          }
        }
        if (this.isClosed) break;
        if (!req.wantReply) continue;
        if (reply && reply.length <= MAX_GLOBAL_REQUEST_PAYLOAD)
          this.proto.requestSuccess(reply.length > 0 ? reply : undefined);
        else this.proto.requestFailure();
      }
    } finally {
      this.servingInbound = false;
    }
  }

  private onRequestReply(payload: Buffer | null): void {
    const entry = this.outbound.shift();
    if (!entry) {
      this.protocolViolation('SSH request reply without a request');
      return;
    }
    if (entry.timer) clearTimeout(entry.timer);
    if (entry.settled) return;
    entry.settled = true;
    if (payload) entry.resolve(payload);
    else entry.reject(new PosternError('REFUSED', 'SSH request refused by the peer'));
  }

  private shutdown(error: PosternError | null, notifyPeer: boolean): void {
    if (this.isClosed) return;
    if (notifyPeer) this.sendDisconnect(DISCONNECT_REASON.BY_APPLICATION);
    this.isClosed = true;
    this.closeError = error;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    // ssh2 may be in the middle of a parse loop that still uses the cipher contexts: free them afterwards.
    setImmediate(() => this.proto.cleanup());

    const closedError = error ?? new PosternError('CLOSED', 'SSH connection closed');
    for (const slot of [...this.slots.values()]) {
      if (slot instanceof ChannelStream) slot.onConnectionClosed();
      else if (slot.kind === 'opening') {
        if (slot.timer) clearTimeout(slot.timer);
        slot.reject(closedError);
      }
    }
    this.slots.clear();
    this.drainWaiters.clear();
    for (const entry of this.outbound.splice(0)) {
      if (entry.timer) clearTimeout(entry.timer);
      if (!entry.settled) entry.reject(closedError);
    }
    this.inbound.length = 0;

    // Packets of this turn (a DISCONNECT, the last failure replies) are still corked: hand them over first.
    this.flushWrites();
    if (error === null && !this.transport.destroyed) {
      this.transport.end();
      this.lingerTimer = setTimeout(() => this.transport.destroy(), CLOSE_LINGER_MS);
      this.lingerTimer.unref();
      this.transport.once('close', () => {
        if (this.lingerTimer) clearTimeout(this.lingerTimer);
      });
    } else {
      this.transport.destroy();
    }
    this.emit('close', error);
    this.resolveClosed(error);
  }
}

/** The OSSH obfuscator's stream (transport/obfuscated-ssh.ts), recognised without importing the transport layer. */
interface DetachableTransport extends Duplex {
  readonly obfuscationFinished: boolean;
  detach(): Duplex;
}

function isDetachable(t: Duplex): t is DetachableTransport {
  const d = t as Partial<DetachableTransport>;
  return typeof d.detach === 'function' && typeof d.obfuscationFinished === 'boolean';
}
