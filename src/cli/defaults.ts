// Defaults that several commands share, in a module of their own so that naming one loads nothing else.

/** Where `postern up` keeps its network, server, back office and client data. */
export const DEFAULT_DATA_DIR = 'postern-data';
