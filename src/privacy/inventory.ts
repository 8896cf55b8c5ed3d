// The data inventory: every table and column Postern persists (and, as services add them, every field of every
// event it writes), with why it is kept, for how long, who may see it and whether it can identify a person.
// The privacy policy page is generated from this, and tests fail when a live database holds a table or column
// that is not declared here, so nothing is stored without saying so.
import type { SqlExecutor } from '../store/index.ts';
import { rowString } from '../store/index.ts';

/** How long a value is kept. */
export type Retention =
  /** Kept until an operator deletes it with the CLI (configuration, not user activity) */
  | { kind: 'until-operator-deletes' }
  /** Kept as long as the database itself (bookkeeping of the database's own structure) */
  | { kind: 'while-database-exists' }
  /** Deleted by the retention scheduler this many days after it was written */
  | { kind: 'days'; days: number };

/**
 * The widest audience that may see a value. Each includes those before it: the operator sees what sponsors
 * see in aggregate, and anything public.
 * - nobody: kept for the system's own use, shown to no person (e.g. a hash for rate limiting)
 * - operator: the operator of the network, on the dashboard and CLI
 * - sponsor-aggregate: sponsors, only as aggregates by date, sponsor and region with small cells suppressed
 * - public: published to anyone (e.g. server entries in signed server lists, home pages sent to clients)
 */
export type Audience = 'nobody' | 'operator' | 'sponsor-aggregate' | 'public';

export interface FieldDeclaration {
  /** Why it is kept, in words a user of the network would understand */
  purpose: string;
  retention: Retention;
  visibleTo: Audience;
  /** Whether the value, alone or with other stored values, can single out a person using the network */
  identifiesPerson: boolean;
}

export interface TableDeclaration {
  /** The service whose migrations create it ('store' for the database's own bookkeeping) */
  service: string;
  table: string;
  purpose: string;
  columns: Readonly<Record<string, FieldDeclaration>>;
}

export interface EventDeclaration {
  /** The event name as written to the spool, e.g. 'server_tunnel' */
  event: string;
  purpose: string;
  fields: Readonly<Record<string, FieldDeclaration>>;
}

const UNTIL_OPERATOR_DELETES: Retention = { kind: 'until-operator-deletes' };
const WHILE_DATABASE_EXISTS: Retention = { kind: 'while-database-exists' };

/** Network configuration that operators manage: kept until they delete it, about no user. */
function config(purpose: string, visibleTo: Audience = 'operator'): FieldDeclaration {
  return { purpose, retention: UNTIL_OPERATOR_DELETES, visibleTo, identifiesPerson: false };
}

/**
 * Raw statistics rows are deleted after the seed's 60 days (DEFAULT_RETENTION_DAYS in src/stats/store.ts, which
 * the stats store's tests hold equal to this; privacy/ cannot import from stats/).
 */
const STATS_RAW_RETENTION: Retention = { kind: 'days', days: 60 };

function statsRaw(purpose: string): FieldDeclaration {
  return { purpose, retention: STATS_RAW_RETENTION, visibleTo: 'operator', identifiesPerson: false };
}

/** Daily aggregates: no user in them, kept after the raw rows are gone. */
function statsRollup(purpose: string, visibleTo: Audience = 'operator'): FieldDeclaration {
  return { purpose, retention: UNTIL_OPERATOR_DELETES, visibleTo, identifiesPerson: false };
}

/** The stats store's own bookkeeping: offsets and dates, about no user, shown to nobody. */
function statsBookkeeping(purpose: string): FieldDeclaration {
  return { purpose, retention: WHILE_DATABASE_EXISTS, visibleTo: 'nobody', identifiesPerson: false };
}

/** Ingest cursors: no user data; deleted once every event of their file is past retention. */
function statsCursor(purpose: string): FieldDeclaration {
  return { purpose, retention: STATS_RAW_RETENTION, visibleTo: 'nobody', identifiesPerson: false };
}

const STATS_TABLES: readonly TableDeclaration[] = [
  {
    service: 'stats',
    table: 'stats_cells',
    purpose:
      'Each combination of sponsor, country, platform and protocol seen in events, stored once and referred to by number from raw rows.',
    columns: {
      id: statsRollup('The number raw rows refer to the combination by.'),
      sponsor_id: statsRollup('The sponsor whose client build was used.'),
      client_region: statsRollup('Country of clients, from GeoIP; never an address.'),
      client_platform: statsRollup('A simplified operating system name.'),
      relay_protocol: statsRollup('The tunnel protocol.'),
    },
  },
  {
    service: 'stats',
    table: 'stats_events',
    purpose:
      'Raw usage events as received from servers, reduced to what the daily rollups need (no hour, server, session, city or network); deleted after 60 days.',
    columns: {
      date: statsRaw('The day of the event, to roll days up and delete them when they expire.'),
      event_name: statsRaw('Which kind of event this is (tunnel, unique user, failure, discovery, ...).'),
      cell_id: statsRaw('Which sponsor, country, platform and protocol the event belongs to.'),
      duration_ms: statsRaw('How long a tunnel lasted, for the daily total of session time.'),
      duration_bucket: statsRaw(
        'The duration rounded to a 2% log-scale step, for daily median and 90th percentile.',
      ),
      bytes_up_tcp: statsRaw('Bytes a tunnel sent, for daily totals.'),
      bytes_down_tcp: statsRaw('Bytes a tunnel received, for daily totals.'),
      bytes: statsRaw('Total bytes of a tunnel, for daily totals.'),
      tunnel_error: statsRaw('Why a tunnel failed, as a short code (never error text).'),
      discovered_servers: statsRaw('How many new servers a discovery handed out.'),
    },
  },
  {
    service: 'stats',
    table: 'stats_domain_bytes',
    purpose:
      'Bytes per domain as servers aggregated them per period (never per session or URL); deleted after 60 days.',
    columns: {
      date: statsRaw('The day of the bucket, to roll days up and delete them when they expire.'),
      cell_id: statsRaw('Which sponsor, country and platform the bytes belong to.'),
      domain: statsRaw("The domain name as mapped by the sponsor's patterns, never a URL or path."),
      bytes: statsRaw('Bytes transferred for that domain in the period.'),
    },
  },
  {
    service: 'stats',
    table: 'stats_ingest_cursors',
    purpose: "How far each server's spool file has been ingested, so a batch sent twice is counted once.",
    columns: {
      host_id: statsCursor("Which of the operator's servers sent the file."),
      file: statsCursor('The spool file name (a time and a sequence number).'),
      next_offset: statsCursor('The byte offset up to which the file has been taken.'),
      last_event_date: statsCursor(
        "The day of the file's latest event: once past retention, the whole row is deleted.",
      ),
    },
  },
  {
    service: 'stats',
    table: 'stats_server_load',
    purpose:
      "Each tunnel server's latest load report, to see how busy the network is now; about servers, not users.",
    columns: {
      host_id: config("Which of the operator's servers reported."),
      hour: config('The hour of its latest report.'),
      established_tunnels: config('Tunnels open on it then.'),
      open_port_forwards: config('Port forwards open on it then.'),
      rss_bytes: config("The server process's memory use then."),
    },
  },
  {
    service: 'stats',
    table: 'stats_dirty_dates',
    purpose: 'Days with events received since their last rollup, so the rollup job knows what to redo.',
    columns: {
      date: statsBookkeeping('A day to roll up again.'),
      generation: statsBookkeeping(
        'Counts batches marking the day, so a rollup running meanwhile is noticed.',
      ),
    },
  },
  {
    service: 'stats',
    table: 'stats_retention',
    purpose: 'The latest retention cutoff applied, so late events of deleted days are not stored.',
    columns: {
      id: statsBookkeeping('Always 1: the table has one row.'),
      cutoff_date: statsBookkeeping('Raw rows dated before this day have been deleted.'),
    },
  },
  {
    service: 'stats',
    table: 'stats_secrets',
    purpose:
      "Secrets of the statistics service: the key that keeps the sponsor view's noise the same each time.",
    columns: {
      name: statsBookkeeping('Which secret (sponsor-noise-key).'),
      value: statsBookkeeping('The secret, 32 random bytes; about no user.'),
    },
  },
  {
    service: 'stats',
    table: 'stats_daily',
    purpose:
      'Daily usage totals by sponsor, country, platform and protocol: what reports and dashboards show.',
    columns: {
      date: statsRollup('The day the totals are for.', 'sponsor-aggregate'),
      sponsor_id: statsRollup('The sponsor.', 'sponsor-aggregate'),
      client_region: statsRollup('The country, from GeoIP.', 'sponsor-aggregate'),
      client_platform: statsRollup('The simplified platform (sponsors see sums over all platforms).'),
      relay_protocol: statsRollup('The tunnel protocol (sponsors see sums over all protocols).'),
      unique_users: statsRollup('How many distinct clients connected that day.', 'sponsor-aggregate'),
      sessions: statsRollup('How many tunnels ended that day.', 'sponsor-aggregate'),
      duration_sum_ms: statsRollup('Total tunnel time.'),
      duration_p50_ms: statsRollup('Median tunnel duration, within 1%.'),
      duration_p90_ms: statsRollup('90th percentile of tunnel duration, within 1%.'),
      bytes_up: statsRollup('Bytes sent by clients.'),
      bytes_down: statsRollup('Bytes received by clients.'),
      bytes: statsRollup('Total bytes.', 'sponsor-aggregate'),
      failures: statsRollup('Failed tunnel attempts.'),
      discoveries: statsRollup('New servers handed out by discovery.'),
      list_downloads: statsRollup('Remote server list downloads.'),
      upgrades: statsRollup('Client upgrades downloaded.'),
    },
  },
  {
    service: 'stats',
    table: 'stats_daily_domains',
    purpose: 'Daily bytes per domain by sponsor, country and platform (never per session).',
    columns: {
      date: statsRollup('The day the totals are for.', 'sponsor-aggregate'),
      sponsor_id: statsRollup('The sponsor.', 'sponsor-aggregate'),
      client_region: statsRollup('The country, from GeoIP.', 'sponsor-aggregate'),
      client_platform: statsRollup('The simplified platform (sponsors see sums over all platforms).'),
      domain: statsRollup("The domain as mapped by the sponsor's patterns.", 'sponsor-aggregate'),
      bytes: statsRollup('Bytes for the domain that day.', 'sponsor-aggregate'),
    },
  },
  {
    service: 'stats',
    table: 'stats_daily_failures',
    purpose: 'Daily failed tunnels by sponsor, country, platform, protocol and error code, to see blocking.',
    columns: {
      date: statsRollup('The day the totals are for.'),
      sponsor_id: statsRollup('The sponsor.'),
      client_region: statsRollup('The country, from GeoIP.'),
      client_platform: statsRollup('The simplified platform.'),
      relay_protocol: statsRollup('The protocol that failed.'),
      tunnel_error: statsRollup('Why they failed, as a short code.'),
      tunnels: statsRollup('How many tunnels failed so.'),
    },
  },
];

export const TABLE_INVENTORY: readonly TableDeclaration[] = [
  {
    service: 'store',
    table: 'schema_migrations',
    purpose: 'Which schema changes have been applied to this database, so upgrades run each change once.',
    columns: {
      service: {
        purpose: 'The Postern service whose schema changed (ops, stats, ...).',
        retention: WHILE_DATABASE_EXISTS,
        visibleTo: 'operator',
        identifiesPerson: false,
      },
      version: {
        purpose: 'The number of the applied schema change.',
        retention: WHILE_DATABASE_EXISTS,
        visibleTo: 'operator',
        identifiesPerson: false,
      },
      applied_at: {
        purpose: 'When the change was applied, to diagnose upgrades.',
        retention: WHILE_DATABASE_EXISTS,
        visibleTo: 'operator',
        identifiesPerson: false,
      },
    },
  },
  {
    service: 'ops',
    table: 'ops_sponsors',
    purpose: 'Partners who distribute the client: what their users are shown and which domains are counted.',
    columns: {
      id: config(
        'Identifies the sponsor in client configs, handshakes and aggregate statistics.',
        'sponsor-aggregate',
      ),
      name: config(
        "The sponsor's name, shown to the operator and in the sponsor's own portal.",
        'sponsor-aggregate',
      ),
      home_pages: config(
        'Pages the client opens after connecting, per region; sent to every client.',
        'public',
      ),
      domain_regexes: config(
        'Patterns that map destination host names to the names bytes are counted under; sent to clients.',
        'public',
      ),
      created_at: config('When the operator added the sponsor.'),
    },
  },
  {
    service: 'ops',
    table: 'ops_propagation_channels',
    purpose: 'Distribution channels of the client, so statistics can be grouped by how people got it.',
    columns: {
      id: config('Identifies the channel in client configs and aggregate statistics.', 'sponsor-aggregate'),
      name: config('A readable name for the channel.'),
      created_at: config('When the operator added the channel.'),
    },
  },
  {
    service: 'ops',
    table: 'ops_servers',
    purpose: "The network's tunnel servers, to build and publish signed server lists.",
    columns: {
      id: config("The server's ID within the network, used by the operator."),
      ip_address: config(
        'The public address of a server the operator runs (not of any user); published in server entries.',
        'public',
      ),
      region: config('Where the server runs, published in its entry for clients to choose.', 'public'),
      capabilities: config(
        'Protocols and API capabilities the server offers, published in its entry.',
        'public',
      ),
      encoded_entry: config('The signed server entry that clients receive in server lists.', 'public'),
      published: config('Whether the server is included in published server lists.'),
      created_at: config('When the operator added the server.'),
    },
  },
  {
    service: 'ops',
    table: 'ops_publications',
    purpose: 'A record of each published server list, so the operator can see what went out where and when.',
    columns: {
      id: config('Numbers the publications in order.'),
      published_at: config('When the list was published.'),
      server_count: config('How many servers the list held.'),
      target: config(
        'Where the list was written: a folder or an s3:// bucket and prefix, never credentials.',
      ),
      sha256: config('The SHA-256 of the published package, to check what clients fetched.'),
    },
  },
  ...STATS_TABLES,
];

/** Raw user activity in a server's event spool and the back office: deleted after the seed's 60 days. */
const USER_ACTIVITY: Retention = { kind: 'days', days: 60 };

function activity(purpose: string, visibleTo: Audience = 'operator'): FieldDeclaration {
  return { purpose, retention: USER_ACTIVITY, visibleTo, identifiesPerson: false };
}

/** The fields every tunnel event carries: when (to the hour), where the server is, who distributed the client. */
const EVENT_COMMON: Readonly<Record<string, FieldDeclaration>> = {
  event_name: activity('Which kind of event this is.', 'sponsor-aggregate'),
  schema_version: activity('The version of the event schema, so older spools stay readable.'),
  timestamp: activity(
    'The hour the event happened (cut to the hour so it cannot be matched to one connection).',
    'sponsor-aggregate',
  ),
  host_id: activity("Which of the operator's servers wrote it, to see load and failures per server."),
};

const TUNNEL_EVENT_BASE: Readonly<Record<string, FieldDeclaration>> = {
  ...EVENT_COMMON,
  sponsor_id: activity(
    'The sponsor whose client build was used, for per-sponsor aggregates.',
    'sponsor-aggregate',
  ),
  propagation_channel_id: activity('How the client build reached users, to see which propagation works.'),
  client_version: activity('The client build number, to plan upgrades.'),
  client_platform: activity('A simplified operating system name (not a user agent).', 'sponsor-aggregate'),
  relay_protocol: activity('The tunnel protocol used, to see which protocols get through.'),
  client_region: activity(
    'Country of the client, from GeoIP at connection time; the address itself is dropped.',
    'sponsor-aggregate',
  ),
  client_city: activity('City of the client, from GeoIP; the address itself is dropped.'),
  client_isp: activity('Network operator of the client, from GeoIP, to see blocking by network.'),
  client_asn: activity("Autonomous system number of the client's network, from GeoIP."),
  client_aso: activity("Autonomous system organisation of the client's network, from GeoIP."),
};

/** Fields of the events servers write to their spool; each service that adds an event declares it here. */
export const EVENT_INVENTORY: readonly EventDeclaration[] = [
  {
    event: 'server_tunnel',
    purpose: 'One per tunnel when it ends: session counts and durations, bytes, and protocol use.',
    fields: {
      ...TUNNEL_EVENT_BASE,
      session_id: activity(
        'The random ID a client makes for one run, to count sessions; not linked to a device or person.',
      ),
      handshake_completed: activity('Whether the client got as far as the API handshake.'),
      start_time: activity('The hour the tunnel started.'),
      duration_ms: activity('How long the tunnel lasted.', 'sponsor-aggregate'),
      bytes_up_tcp: activity('Bytes the client sent through its port forwards.', 'sponsor-aggregate'),
      bytes_down_tcp: activity('Bytes the client received through its port forwards.', 'sponsor-aggregate'),
      bytes: activity('Total bytes through the tunnel.', 'sponsor-aggregate'),
      port_forwards: activity('How many port forwards the tunnel opened.'),
      port_forwards_refused: activity('How many port forwards were refused (policy, limits, failed dials).'),
      peak_concurrent_port_forwards: activity('The most port forwards open at once, to size limits.'),
    },
  },
  {
    event: 'unique_user',
    purpose:
      'At most one per client per day (decided from its hour-truncated last connection), to count users.',
    fields: { ...TUNNEL_EVENT_BASE },
  },
  {
    event: 'failed_tunnel',
    purpose:
      'A tunnel a client could not establish, reported later through another tunnel: how often each protocol fails and why.',
    fields: {
      ...TUNNEL_EVENT_BASE,
      tunnel_error: activity(
        'Why it failed, as a short code (timeout, refused, reset, ...); the error text itself is never kept.',
        'sponsor-aggregate',
      ),
    },
  },
  {
    event: 'domain_dest_bytes',
    purpose:
      'Bytes carried for some specific domains (names the sponsor chose; everything else is "(OTHER)"), summed over every tunnel of a server for a period: never per session, never a URL.',
    fields: {
      ...EVENT_COMMON,
      sponsor_id: TUNNEL_EVENT_BASE['sponsor_id']!,
      client_platform: TUNNEL_EVENT_BASE['client_platform']!,
      client_region: TUNNEL_EVENT_BASE['client_region']!,
      client_asn: TUNNEL_EVENT_BASE['client_asn']!,
      domain: activity(
        'The domain name the bytes went to or came from (no path, no URL).',
        'sponsor-aggregate',
      ),
      bytes: activity('Bytes for that domain in the period, summed over all sessions.', 'sponsor-aggregate'),
    },
  },
  {
    event: 'remote_server_list',
    purpose: 'A client downloaded a signed server list: how discovery through lists works.',
    fields: {
      ...TUNNEL_EVENT_BASE,
      tunneled: activity('Whether the download went through a tunnel.'),
      authenticated: activity('Whether the list verified.'),
      bytes: activity('Size of the download.'),
      duration_ms: activity('How long the download took.'),
    },
  },
  {
    event: 'discovery',
    purpose: 'A client was handed new servers in its handshake: how often new servers are discovered.',
    fields: { ...TUNNEL_EVENT_BASE, discovered_servers: activity('How many servers it was given.') },
  },
  {
    event: 'upgrade',
    purpose: 'A client upgraded itself: the number of upgrades.',
    fields: { ...TUNNEL_EVENT_BASE, upgrade_version: activity('The client version it upgraded to.') },
  },
  {
    event: 'server_load',
    purpose: "A server's load every few minutes, to size the network; about no client.",
    fields: {
      ...EVENT_COMMON,
      established_tunnels: activity('Tunnels open at that moment.'),
      open_port_forwards: activity('Port forwards open at that moment.'),
      bytes_since_last: activity('Bytes of port forwards that ended since the previous load event.'),
      rss_bytes: activity("The server process's memory use."),
    },
  },
  {
    event: 'irregular_tunnel',
    purpose:
      'A connection that failed the obfuscation check (a probe or a replay), to see blocking attempts.',
    fields: {
      ...EVENT_COMMON,
      listener_protocol: activity('The protocol of the listener that was probed.'),
      tunnel_error: activity('Why the connection was refused (bad magic, replayed seed, ...).'),
      duplicate_seed: activity('Whether it replayed a seed seen before.'),
      client_region: activity('Country of the prober, from GeoIP; the address itself is dropped.'),
      client_city: activity('City of the prober, from GeoIP.'),
      client_isp: activity('Network operator of the prober, from GeoIP.'),
      client_asn: activity("Autonomous system number of the prober's network, from GeoIP."),
      client_aso: activity("Autonomous system organisation of the prober's network, from GeoIP."),
    },
  },
];

/** A file Postern keeps outside a database: on a user's machine, a tunnel server, the back office. */
export interface FileDeclaration {
  /** Where it lives (relative to the data folder of whoever keeps it) */
  file: string;
  /** Whose machine keeps it */
  keptBy: 'client' | 'tunnel server' | 'back office' | 'network operator';
  purpose: string;
  /** Its top-level JSON fields (for a JSON file), each declared like a column */
  fields: Readonly<Record<string, FieldDeclaration>>;
}

const UNTIL_REPLACED: Retention = { kind: 'until-operator-deletes' };

function kept(
  purpose: string,
  visibleTo: Audience = 'nobody',
  retention: Retention = UNTIL_REPLACED,
): FieldDeclaration {
  return { purpose, retention, visibleTo, identifiesPerson: false };
}

/**
 * Files beside the databases. Event spool files hold the events declared in EVENT_INVENTORY and are deleted
 * once the back office has them; keys and configs are declared here by name only, as they are about no user.
 */
export const FILE_INVENTORY: readonly FileDeclaration[] = [
  {
    file: 'client/server-entries.json',
    keptBy: 'client',
    purpose:
      "The client's own cache, on the user's machine only: servers it may use, which worked last, and the hour-truncated time the network last saw it.",
    fields: {
      version: kept('The file format version.'),
      lastGoodServer: kept(
        'The tag of the server that last gave a working tunnel, to try it first next time.',
      ),
      lastConnected: kept(
        "The hour the server said it last saw this client; sent back so servers can count a day's users without any user ID.",
      ),
      entries: kept('Signed server entries (public: the same as in the published lists).', 'public'),
    },
  },
  {
    file: 'server/spool/shipper-state.json',
    keptBy: 'tunnel server',
    purpose: 'How far the back office has acknowledged each spool file, so shipping resumes after a restart.',
    fields: {
      version: kept('The file format version.'),
      files: kept('Spool file name to the byte offset acknowledged; an entry goes with its file.'),
    },
  },
  {
    file: 'network/stats-keys.json',
    keptBy: 'network operator',
    purpose:
      "The SHA-256 of each server's statistics key, so the back office knows which server sent a batch.",
    fields: { hosts: kept('Host ID to key digest (the key itself stays on the server).') },
  },
];

export function describeRetention(r: Retention): string {
  switch (r.kind) {
    case 'until-operator-deletes':
      return 'until the operator deletes it';
    case 'while-database-exists':
      return 'as long as the database exists';
    case 'days':
      return `${r.days} days`;
  }
}

/** Every declared column as 'table.column'. */
export function declaredColumns(inventory: readonly TableDeclaration[] = TABLE_INVENTORY): Set<string> {
  const out = new Set<string>();
  for (const t of inventory) for (const c of Object.keys(t.columns)) out.add(`${t.table}.${c}`);
  return out;
}

/** Every table and column of the database the executor is connected to (its current schema on PostgreSQL). */
export async function listLiveColumns(db: SqlExecutor): Promise<string[]> {
  const rows =
    db.dialect === 'sqlite'
      ? await db.query(
          `SELECT m.name AS table_name, p.name AS column_name
           FROM sqlite_master AS m, pragma_table_info(m.name) AS p
           WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
           ORDER BY m.name, p.cid`,
        )
      : await db.query(
          `SELECT c.table_name::text AS table_name, c.column_name::text AS column_name
           FROM information_schema.columns AS c
           JOIN information_schema.tables AS t
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name
           WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
           ORDER BY c.table_name, c.ordinal_position`,
        );
  return rows.map((r) => `${rowString(r, 'table_name')}.${rowString(r, 'column_name')}`);
}

/**
 * The live columns, as 'table.column', that the inventory does not declare (a table that is not declared at
 * all shows every one of its columns). An empty list means everything stored is accounted for.
 */
export async function findUndeclaredColumns(
  db: SqlExecutor,
  inventory: readonly TableDeclaration[] = TABLE_INVENTORY,
): Promise<string[]> {
  const declared = declaredColumns(inventory);
  return (await listLiveColumns(db)).filter((c) => !declared.has(c));
}

/** The fields of an event record that its declaration does not list (all of them for an undeclared event). */
export function findUndeclaredEventFields(
  event: string,
  record: Readonly<Record<string, unknown>>,
  inventory: readonly EventDeclaration[] = EVENT_INVENTORY,
): string[] {
  const decl = inventory.find((e) => e.event === event);
  return Object.keys(record)
    .filter((f) => !decl || !Object.hasOwn(decl.fields, f))
    .map((f) => `${event}.${f}`);
}
