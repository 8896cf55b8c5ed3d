// Types for the parts of ssh2's protocol layer that src/ssh drives directly. These modules are ssh2 1.17's
// internals (no public typings): ssh2's high-level Server and Client refuse custom global requests and
// channel types, which the Psiphon API needs, so Postern builds on the Protocol class underneath them.
// Only what src/ssh uses is declared; ssh2-tuning.ts checks the private fields it touches at run time.

declare module 'ssh2/lib/protocol/keyParser.js' {
  export interface ParsedKey {
    readonly type: string;
    readonly comment: string;
    getPublicSSH(): Buffer;
    getPrivatePEM(): string | null;
  }
  const keyParser: {
    parseKey(data: string | Buffer, passphrase?: string): ParsedKey | ParsedKey[] | Error;
  };
  export default keyParser;
}

declare module 'ssh2/lib/protocol/Protocol.js' {
  import type { ParsedKey } from 'ssh2/lib/protocol/keyParser.js';

  export interface DirectionAlgorithms {
    cipher: string[];
    mac: string[];
    compress: string[];
    lang: string[];
  }

  export interface AlgorithmsOffer {
    kex: string[];
    serverHostKey: string[];
    cs: DirectionAlgorithms;
    sc: DirectionAlgorithms;
  }

  export interface NegotiatedDirection {
    cipher: string;
    mac: string;
    compress: string;
    lang: string;
  }

  export interface NegotiatedAlgorithms {
    kex: string;
    serverHostKey: string;
    cs: NegotiatedDirection;
    sc: NegotiatedDirection;
  }

  export interface IdentificationHeader {
    greeting: string;
    identRaw: string;
    versions: { protocol: string; software: string };
    comments: string | undefined;
  }

  export interface ChannelOpenConfirmationInfo {
    recipient: number;
    sender: number;
    window: number;
    packetSize: number;
    data: Buffer | undefined;
  }

  /** Callbacks Protocol makes after it has parsed (and length-checked) a message. */
  export interface MessageHandlers {
    DISCONNECT?: (p: Protocol, reason: number, description: string | undefined) => void;
    SERVICE_REQUEST?: (p: Protocol, name: string) => void;
    SERVICE_ACCEPT?: (p: Protocol, name: string) => void;
    USERAUTH_REQUEST?: (
      p: Protocol,
      username: string,
      service: string,
      method: string,
      methodData: unknown,
    ) => void;
    USERAUTH_FAILURE?: (p: Protocol, methods: string[] | undefined, partial: boolean) => void;
    USERAUTH_SUCCESS?: (p: Protocol) => void;
    USERAUTH_BANNER?: (p: Protocol, message: string) => void;
    USERAUTH_PASSWD_CHANGEREQ?: (p: Protocol, prompt: string) => void;
    GLOBAL_REQUEST?: (p: Protocol, name: string, wantReply: boolean, data: unknown) => void;
    REQUEST_SUCCESS?: (p: Protocol, data: Buffer | null) => void;
    REQUEST_FAILURE?: (p: Protocol) => void;
    CHANNEL_OPEN_CONFIRMATION?: (p: Protocol, info: ChannelOpenConfirmationInfo) => void;
    CHANNEL_OPEN_FAILURE?: (p: Protocol, recipient: number, reason: number, description: string) => void;
    CHANNEL_WINDOW_ADJUST?: (p: Protocol, recipient: number, amount: number) => void;
    CHANNEL_DATA?: (p: Protocol, recipient: number, data: Buffer) => void;
    CHANNEL_EXTENDED_DATA?: (p: Protocol, recipient: number, data: Buffer, type: number) => void;
    CHANNEL_EOF?: (p: Protocol, recipient: number) => void;
    CHANNEL_CLOSE?: (p: Protocol, recipient: number) => void;
    CHANNEL_REQUEST?: (
      p: Protocol,
      recipient: number,
      type: string,
      wantReply: boolean,
      data: unknown,
    ) => void;
    CHANNEL_SUCCESS?: (p: Protocol, recipient: number) => void;
    CHANNEL_FAILURE?: (p: Protocol, recipient: number) => void;
  }

  export interface ProtocolConfig {
    server?: boolean;
    /** Server only: host key per signature algorithm name ('rsa-sha2-256', 'ssh-rsa', ...). */
    hostKeys?: Record<string, ParsedKey>;
    /** The software-version part of the identification string (Protocol prepends "SSH-2.0-"). */
    ident?: string;
    offer?: AlgorithmsOffer;
    onWrite: (data: Buffer) => void;
    onError: (err: Error) => void;
    onHeader?: (header: IdentificationHeader) => void;
    onHandshakeComplete?: (negotiated: NegotiatedAlgorithms) => void;
    /** Client only: the server's host key blob; return a boolean, or undefined and call verify later. */
    hostVerifier?: (key: Buffer, verify: (permitted: boolean) => void) => boolean | undefined;
    messageHandlers?: MessageHandlers;
    debug?: (message: string) => void;
  }

  export interface PacketWriter {
    allocStart: number;
    alloc(payloadSize: number, force?: boolean): Buffer;
    finalize(packet: Buffer, force?: boolean): Buffer;
  }

  class Protocol {
    constructor(config: ProtocolConfig);
    /** Sends the identification string; replaced by undefined once called. */
    start: (() => void) | undefined;
    parse(chunk: Buffer, start: number, end: number): void;
    cleanup(): void;
    disconnect(reason: number): void;
    rekey(): void;
    requestSuccess(data?: Buffer): void;
    requestFailure(): void;
    channelSuccess(chan: number): void;
    channelFailure(chan: number): void;
    channelEOF(chan: number): void;
    channelClose(chan: number): void;
    channelWindowAdjust(chan: number, amount: number): void;
    channelData(chan: number, data: Buffer): void;
    channelOpenConfirm(remote: number, local: number, initWindow: number, maxPacket: number): void;
    channelOpenFail(remote: number, reason: number, description?: string): void;
    service(name: string): void;
    authPassword(username: string, password: string | Buffer): void;
    authNone(username: string): void;
    serviceAccept(name: string): void;
    authFailure(methods?: string[], partial?: boolean): void;
    authSuccess(): void;

    // Private state src/ssh relies on (checked by ssh2-tuning.ts and the tests).
    _packetRW: { write: PacketWriter };
    /** Set while a key exchange is in progress; outgoing packets are queued meanwhile. */
    _kexinit: Buffer | undefined;
    /** Dispatches a decrypted payload; new deciphers take it at each key exchange. */
    _onPayload: (payload: Buffer) => unknown;
    _cipher: unknown;
    _decipher: unknown;
    /** Present until the instance is torn down. */
    _destruct: ((reason?: string) => void) | undefined;
    _onPacket: () => void;
  }
  export default Protocol;
}

declare module 'ssh2/lib/protocol/utils.js' {
  import type Protocol from 'ssh2/lib/protocol/Protocol.js';
  const utils: {
    /** Encrypts and writes a packet from the packet writer, or queues it during a key exchange. */
    sendPacket(proto: Protocol, packet: Buffer, bypass?: boolean): boolean;
  };
  export default utils;
}

declare module 'ssh2/lib/protocol/crypto.js' {
  export interface CipherInfo {
    sslName: string;
    blockLen: number;
    keyLen: number;
    ivLen: number;
    authLen: number;
    discardLen: number;
    stream: boolean;
  }
  export interface MacInfo {
    sslName: string;
    len: number;
    actualLen: number;
    isETM: boolean;
  }
  export interface CipherConfig {
    outbound: {
      onWrite: (data: Buffer) => void;
      seqno: number;
      cipherInfo: CipherInfo;
      cipherKey: Buffer;
      cipherIV: Buffer | undefined;
      macInfo: MacInfo | undefined;
      macKey: Buffer | undefined;
    };
  }
  export interface DecipherConfig {
    inbound: {
      onPayload: (payload: Buffer) => unknown;
      seqno: number;
      decipherInfo: CipherInfo;
      decipherKey: Buffer;
      decipherIV: Buffer | undefined;
      macInfo: MacInfo | undefined;
      macKey: Buffer | undefined;
    };
  }
  export interface Ssh2Cipher {
    outSeqno: number;
    allocPacket(payloadLen: number): Buffer;
    encrypt(packet: Buffer): void;
    free(): void;
  }
  export interface Ssh2Decipher {
    inSeqno: number;
    decrypt(data: Buffer, start: number, end: number): unknown;
    free(): void;
  }
  const crypto: {
    bindingAvailable: boolean;
    /** Resolves once the WebAssembly Poly1305 fallback is loaded; Protocol needs it before parsing. */
    init: Promise<void>;
    CIPHER_INFO: Record<string, CipherInfo>;
    MAC_INFO: Record<string, MacInfo>;
    createCipher(config: CipherConfig): Ssh2Cipher;
    createDecipher(config: DecipherConfig): Ssh2Decipher;
  };
  export default crypto;
}
