export * from './ids.ts';
export * from './network.ts';
export * from './sponsors.ts';
export * from './servers.ts';
export * from './publish.ts';
export * from './client-config.ts';
export * from './list-server.ts';
