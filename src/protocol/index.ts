// The protocol module's public surface: formats both the client and the server side share.
export * from './authenticated-package.ts';
export * from './authorization.ts';
export * from './go-json.ts';
export * from './tunnel-protocols.ts';
export * from './server-entry.ts';
export * from './keys.ts';
export * from './psinet.ts';
export * from './server-config.ts';
export * from './client-config.ts';
export * from './cbor.ts';
export * from './api.ts';
