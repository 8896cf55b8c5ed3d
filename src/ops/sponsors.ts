// Sponsors (partners who distribute the client) and propagation channels: parsing the operator's flags and
// writing them to the registry; and the psinet file servers read their sponsor answers from.
import { PosternError } from '../common/errors.ts';
import type { Clock } from '../common/clock.ts';
import type { DomainRegex, HomePage, OpsStore, SponsorRecord } from '../store/index.ts';
import { DEFAULT_REGION_KEY, type Psinet } from '../protocol/psinet.ts';
import { parseId, newId } from './ids.ts';

export const MAX_HOME_PAGES = 64;
export const MAX_DOMAIN_REGEXES = 512;
export const MAX_REGEX_LENGTH = 1024;
export const MAX_URL_LENGTH = 2048;

/** "URL" (every region) or "RR=URL" (one two-letter region). */
export function parseHomePage(arg: string): HomePage {
  const m = /^([A-Z]{2})=(.+)$/.exec(arg);
  const region = m?.[1] ?? '';
  const url = m?.[2] ?? arg;
  if (url.length > MAX_URL_LENGTH) {
    throw new PosternError('BAD_ARGUMENT', `home page URL is longer than ${MAX_URL_LENGTH} characters`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new PosternError(
      'BAD_ARGUMENT',
      `home page "${url}" is not an absolute URL (e.g. https://example.org/)`,
    );
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new PosternError('BAD_ARGUMENT', `home page "${url}" must be an http or https URL`);
  }
  return { region, url };
}

// Constructs RE2 (the reference server's regex engine) lacks; a regex using them would work here and fail there.
const NON_RE2 = /\(\?<?[=!]|\\[1-9]|\\k</;

/** "REGEX=NAME": the last '=' separates them, since a regex may hold '='. */
export function parseDomainRegex(arg: string): DomainRegex {
  const at = arg.lastIndexOf('=');
  if (at <= 0 || at === arg.length - 1) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `domain regex "${arg}" must be REGEX=NAME, e.g. '^(.*\\.)?youtube\\.com$=youtube.com'`,
    );
  }
  const regex = arg.slice(0, at);
  const name = arg.slice(at + 1);
  validateDomainRegex(regex);
  if (!/^[A-Za-z0-9.-]{1,253}$/.test(name)) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `domain name "${name}" may hold only letters, digits, '.' and '-'`,
    );
  }
  return { regex, name };
}

export function validateDomainRegex(regex: string): void {
  if (regex.length > MAX_REGEX_LENGTH) {
    throw new PosternError('BAD_ARGUMENT', `regex is longer than ${MAX_REGEX_LENGTH} characters`);
  }
  if (NON_RE2.test(regex)) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `regex "${regex}" uses look-around or back-references, which Psiphon-compatible servers (RE2) do not support`,
    );
  }
  try {
    new RegExp(regex);
  } catch (e) {
    throw new PosternError('BAD_ARGUMENT', `regex "${regex}" does not compile: ${(e as Error).message}`);
  }
}

export interface AddSponsorInput {
  id?: string;
  name: string;
  homePages: string[];
  domainRegexes: string[];
}

export async function addSponsor(
  store: OpsStore,
  input: AddSponsorInput,
  clock: Clock,
): Promise<SponsorRecord> {
  const id = input.id === undefined ? newId() : parseId(input.id, 'sponsor ID');
  const name = input.name.trim();
  if (!name || name.length > 200)
    throw new PosternError('BAD_ARGUMENT', 'sponsor name must be 1 to 200 characters');
  if (input.homePages.length > MAX_HOME_PAGES) {
    throw new PosternError('BAD_ARGUMENT', `at most ${MAX_HOME_PAGES} home pages per sponsor`);
  }
  if (input.domainRegexes.length > MAX_DOMAIN_REGEXES) {
    throw new PosternError('BAD_ARGUMENT', `at most ${MAX_DOMAIN_REGEXES} domain regexes per sponsor`);
  }
  const record = {
    id,
    name,
    homePages: input.homePages.map(parseHomePage),
    domainRegexes: input.domainRegexes.map(parseDomainRegex),
  };
  const now = clock.now();
  await store.addSponsor(record, now);
  return { ...record, createdAt: now };
}

export async function addPropagationChannel(
  store: OpsStore,
  input: { id?: string; name: string },
  clock: Clock,
): Promise<{ id: string; name: string }> {
  const id = input.id === undefined ? newId() : parseId(input.id, 'propagation channel ID');
  const name = input.name.trim();
  if (!name || name.length > 200)
    throw new PosternError('BAD_ARGUMENT', 'channel name must be 1 to 200 characters');
  await store.addPropagationChannel({ id, name }, clock.now());
  return { id, name };
}

/** The psinet database a server reads, in psiphond's format, from the registry's sponsors. */
export function buildPsinet(sponsors: SponsorRecord[], defaultSponsorId = ''): Psinet {
  const out: Psinet = {
    sponsors: {},
    client_versions: {},
    default_sponsor_id: defaultSponsorId,
    default_alert_action_urls: {},
    valid_server_entry_tags: {},
    discovery_servers: [],
  };
  for (const s of sponsors) {
    const homePages: Record<string, { region: string; url: string }[]> = {};
    for (const hp of s.homePages) {
      const key = hp.region || DEFAULT_REGION_KEY;
      (homePages[key] ??= []).push({ region: key, url: hp.url });
    }
    out.sponsors[s.id] = {
      id: s.id,
      home_pages: homePages,
      mobile_home_pages: {},
      alert_action_urls: {},
      https_request_regexes: s.domainRegexes.map((r) => ({ regex: r.regex, replace: r.name })),
    };
  }
  return out;
}
