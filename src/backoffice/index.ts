// The back office service's public surface: config, first-run identity, the HTTPS service and its stats parts.
export * from './config.ts';
export * from './identity.ts';
export * from './host-keys.ts';
export * from './stats-jobs.ts';
export * from './stats-routes.ts';
export * from './sponsor-route.ts';
export * from './csv.ts';
export * from './server.ts';
