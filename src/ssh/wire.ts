// SSH wire constants and the few messages src/ssh encodes or parses itself (RFC 4253/4254), because ssh2's
// Protocol has no method for them: global requests with a raw payload, channel opens of any type, and the
// raw parse of CHANNEL_OPEN (ssh2 drops the type-specific data of channel types it does not know, such as
// Psiphon's "direct-tcpip-no-split-tunnel@psiphon.ca").

import type Protocol from 'ssh2/lib/protocol/Protocol.js';
import ssh2Utils from 'ssh2/lib/protocol/utils.js';
import { PosternError } from '../common/errors.ts';

export const MSG_KEXINIT = 20;
export const MSG_GLOBAL_REQUEST = 80;
export const MSG_CHANNEL_OPEN = 90;

/** RFC 4253 section 11.1. */
export const DISCONNECT_REASON = {
  PROTOCOL_ERROR: 2,
  KEY_EXCHANGE_FAILED: 3,
  SERVICE_NOT_AVAILABLE: 7,
  BY_APPLICATION: 11,
  TOO_MANY_CONNECTIONS: 12,
  NO_MORE_AUTH_METHODS_AVAILABLE: 14,
} as const;

/** RFC 4254 section 5.1, plus Psiphon's split-tunnel rejection (protocol.CHANNEL_REJECT_REASON_SPLIT_TUNNEL). */
export const CHANNEL_OPEN_FAILURE = {
  ADMINISTRATIVELY_PROHIBITED: 1,
  CONNECT_FAILED: 2,
  UNKNOWN_CHANNEL_TYPE: 3,
  RESOURCE_SHORTAGE: 4,
  SPLIT_TUNNEL: 0xfe000000,
} as const;

/** The largest packet_length any SSH peer is required to accept (OpenSSH and Go both cap at 256 KiB). */
export const SSH_MAX_PACKET_LENGTH = 256 * 1024;
/** Room for the packet header, padding and the request name around a global request's payload. */
const GLOBAL_REQUEST_OVERHEAD = 1024;
/** Largest global request (or reply) payload we send or accept: a Psiphon status request can reach 64 KiB+. */
export const MAX_GLOBAL_REQUEST_PAYLOAD = SSH_MAX_PACKET_LENGTH - GLOBAL_REQUEST_OVERHEAD;
/** Longest request or channel type name we send or accept (SSH names are short ASCII). */
export const MAX_NAME_LENGTH = 64;
/** Longest host name in a direct-tcpip open (a DNS name is at most 253 characters). */
export const MAX_HOST_LENGTH = 255;
/** Largest type-specific data we keep from a CHANNEL_OPEN of a type we do not parse ourselves. */
export const MAX_CHANNEL_OPEN_EXTRA = 16 * 1024;
/** Largest value of a uint32 field; windows are clamped to it (RFC 4254 section 5.2). */
export const MAX_UINT32 = 0xffffffff;

/** True for the names SSH allows: printable US-ASCII without spaces or commas. */
export function isValidSshName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x2c) return false;
  }
  return true;
}

function checkName(name: string, what: string): void {
  if (!isValidSshName(name))
    throw new PosternError('BAD_ARGUMENT', `${what} "${name}" is not a valid SSH name`);
}

/** Sends SSH_MSG_GLOBAL_REQUEST with `payload` as the raw request-specific data. */
export function sendGlobalRequest(proto: Protocol, name: string, wantReply: boolean, payload: Buffer): void {
  checkName(name, 'request name');
  if (payload.length > MAX_GLOBAL_REQUEST_PAYLOAD) {
    throw new PosternError(
      'TOO_LARGE',
      `global request payload of ${payload.length} bytes exceeds ${MAX_GLOBAL_REQUEST_PAYLOAD}`,
    );
  }
  // Built the way Protocol's own methods build theirs: the writer reserves the header (or nothing while a key
  // exchange is in progress, when the packet is queued as a bare payload).
  const writer = proto._packetRW.write;
  let p = writer.allocStart;
  const packet = writer.alloc(1 + 4 + name.length + 1 + payload.length);
  packet[p] = MSG_GLOBAL_REQUEST;
  packet.writeUInt32BE(name.length, ++p);
  packet.write(name, (p += 4), 'latin1');
  packet[(p += name.length)] = wantReply ? 1 : 0;
  packet.set(payload, ++p);
  ssh2Utils.sendPacket(proto, writer.finalize(packet));
}

/** Sends SSH_MSG_CHANNEL_OPEN of any type with the given type-specific data. */
export function sendChannelOpen(
  proto: Protocol,
  type: string,
  localId: number,
  initialWindow: number,
  maxPacket: number,
  extra: Buffer,
): void {
  checkName(type, 'channel type');
  const writer = proto._packetRW.write;
  let p = writer.allocStart;
  const packet = writer.alloc(1 + 4 + type.length + 12 + extra.length);
  packet[p] = MSG_CHANNEL_OPEN;
  packet.writeUInt32BE(type.length, ++p);
  packet.write(type, (p += 4), 'latin1');
  packet.writeUInt32BE(localId, (p += type.length));
  packet.writeUInt32BE(initialWindow, (p += 4));
  packet.writeUInt32BE(maxPacket, (p += 4));
  packet.set(extra, (p += 4));
  ssh2Utils.sendPacket(proto, writer.finalize(packet));
}

/** Encodes the type-specific data of a direct-tcpip open (RFC 4254 section 7.2). */
export function encodeDirectTcpipData(
  host: string,
  port: number,
  originHost: string,
  originPort: number,
): Buffer {
  const hostBytes = Buffer.from(host, 'utf8');
  const originBytes = Buffer.from(originHost, 'utf8');
  const out = Buffer.allocUnsafe(4 + hostBytes.length + 4 + 4 + originBytes.length + 4);
  let p = out.writeUInt32BE(hostBytes.length, 0);
  p += hostBytes.copy(out, p);
  p = out.writeUInt32BE(port, p);
  p = out.writeUInt32BE(originBytes.length, p);
  p += originBytes.copy(out, p);
  out.writeUInt32BE(originPort, p);
  return out;
}

/** A bounds-checked reader over hostile bytes: every read either succeeds or throws SSH_PROTOCOL. */
export class SshReader {
  private pos: number;
  constructor(
    private readonly buf: Buffer,
    start = 0,
  ) {
    this.pos = start;
  }
  get remaining(): number {
    return this.buf.length - this.pos;
  }
  uint32(): number {
    if (this.remaining < 4) throw new PosternError('SSH_PROTOCOL', 'truncated SSH message');
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  bytes(maxLength: number): Buffer {
    const len = this.uint32();
    if (len > maxLength)
      throw new PosternError('SSH_PROTOCOL', `SSH string of ${len} bytes exceeds ${maxLength}`);
    if (this.remaining < len) throw new PosternError('SSH_PROTOCOL', 'truncated SSH string');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
  /** A string that must be valid UTF-8. */
  text(maxLength: number): string {
    const raw = this.bytes(maxLength);
    const s = raw.toString('utf8');
    if (!Buffer.from(s, 'utf8').equals(raw))
      throw new PosternError('SSH_PROTOCOL', 'SSH string is not valid UTF-8');
    return s;
  }
  rest(): Buffer {
    const out = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return out;
  }
}

export interface ChannelOpenMessage {
  type: string;
  senderId: number;
  initialWindow: number;
  maxPacket: number;
  /** Type-specific data, unparsed. */
  extra: Buffer;
}

/** Parses SSH_MSG_CHANNEL_OPEN (payload starts with the message number). */
export function parseChannelOpen(payload: Buffer): ChannelOpenMessage {
  const r = new SshReader(payload, 1);
  const type = r.bytes(MAX_NAME_LENGTH).toString('latin1');
  if (!isValidSshName(type)) throw new PosternError('SSH_PROTOCOL', 'invalid channel type');
  const senderId = r.uint32();
  const initialWindow = r.uint32();
  const maxPacket = r.uint32();
  if (r.remaining > MAX_CHANNEL_OPEN_EXTRA)
    throw new PosternError('SSH_PROTOCOL', 'channel open data too large');
  return { type, senderId, initialWindow, maxPacket, extra: Buffer.from(r.rest()) };
}

export interface DirectTcpipTarget {
  host: string;
  port: number;
  originHost: string;
  originPort: number;
}

/** Parses direct-tcpip type-specific data; a port must fit in 16 bits. */
export function parseDirectTcpipData(extra: Buffer): DirectTcpipTarget {
  const r = new SshReader(extra);
  const host = r.text(MAX_HOST_LENGTH);
  const port = r.uint32();
  const originHost = r.text(MAX_HOST_LENGTH);
  const originPort = r.uint32();
  if (port > 0xffff || originPort > 0xffff)
    throw new PosternError('SSH_PROTOCOL', 'direct-tcpip port out of range');
  if (host.length === 0) throw new PosternError('SSH_PROTOCOL', 'direct-tcpip without a destination host');
  return { host, port, originHost, originPort };
}
