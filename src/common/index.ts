export * from './errors.ts';
export * from './logger.ts';
export * from './redact.ts';
export * from './clock.ts';
export * from './config.ts';
export * from './files.ts';
