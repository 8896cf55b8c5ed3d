// The tunnel server's public surface.
export * from './api-handlers.ts';
