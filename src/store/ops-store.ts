// The control plane's registry: sponsors, propagation channels, servers and publications of the remote server
// list. Key material stays in files under the network directory; this store holds only what operators list
// and query. Two implementations: SQLite (embedded default) and PostgreSQL.

export interface HomePage {
  /** Two-letter region code, or '' for every region */
  region: string;
  url: string;
}

export interface DomainRegex {
  /** A JavaScript/RE2-compatible regular expression matched against a destination host name */
  regex: string;
  /** The name the matched bytes are counted under, e.g. "youtube.com" */
  name: string;
}

export interface SponsorRecord {
  id: string;
  name: string;
  homePages: HomePage[];
  domainRegexes: DomainRegex[];
  createdAt: Date;
}

export interface PropagationChannelRecord {
  id: string;
  name: string;
  createdAt: Date;
}

export interface ServerRecord {
  /** The server's ID within the network (operator-chosen or generated) */
  id: string;
  /** The server's public address, as in its entry */
  ipAddress: string;
  /** Two-letter region of the server host */
  region: string;
  /** Tunnel protocols and API capabilities from its entry */
  capabilities: string[];
  /** The signed, hex-encoded server entry */
  encodedEntry: string;
  /** Whether it is listed in published remote server lists */
  published: boolean;
  createdAt: Date;
}

export interface PublicationRecord {
  id: number;
  publishedAt: Date;
  serverCount: number;
  /** Where the list went: a directory path or an s3://bucket/prefix URL (never credentials) */
  target: string;
  /** SHA-256 (hex) of the published package bytes */
  sha256: string;
}

export interface OpsStore {
  /** Adds a sponsor; ALREADY_EXISTS when the ID is taken. */
  addSponsor(s: Omit<SponsorRecord, 'createdAt'>, now: Date): Promise<void>;
  /** Replaces a sponsor's name, home pages and regexes; NOT_FOUND when absent. */
  updateSponsor(s: Omit<SponsorRecord, 'createdAt'>): Promise<void>;
  getSponsor(id: string): Promise<SponsorRecord | undefined>;
  /** Sorted by ID. */
  listSponsors(): Promise<SponsorRecord[]>;

  /** Adds a propagation channel; ALREADY_EXISTS when the ID is taken. */
  addPropagationChannel(c: Omit<PropagationChannelRecord, 'createdAt'>, now: Date): Promise<void>;
  getPropagationChannel(id: string): Promise<PropagationChannelRecord | undefined>;
  /** Sorted by ID. */
  listPropagationChannels(): Promise<PropagationChannelRecord[]>;

  /** Adds a server; ALREADY_EXISTS when the ID is taken. */
  addServer(s: Omit<ServerRecord, 'createdAt'>, now: Date): Promise<void>;
  getServer(id: string): Promise<ServerRecord | undefined>;
  /** Sorted by ID. */
  listServers(): Promise<ServerRecord[]>;
  /** NOT_FOUND when absent. */
  setServerPublished(id: string, published: boolean): Promise<void>;
  /** NOT_FOUND when absent. */
  removeServer(id: string): Promise<void>;

  recordPublication(p: Omit<PublicationRecord, 'id'>): Promise<PublicationRecord>;
  /** Oldest first. */
  listPublications(): Promise<PublicationRecord[]>;

  close(): Promise<void>;
}
