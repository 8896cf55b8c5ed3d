// The "psinet" database a tunnel server reads for sponsor-specific answers (home pages, the regexes that name
// domains for byte counts, client versions for upgrades). Same JSON shape as psiphond's psinet file, so one
// file serves a Postern server and a reference server alike.
import { z } from 'zod';

export const HomePageSchema = z.object({ region: z.string(), url: z.string() });

export const HttpsRequestRegexSchema = z.object({ regex: z.string(), replace: z.string() });

export const PsinetSponsorSchema = z.object({
  id: z.string(),
  home_pages: z.record(z.string(), z.array(HomePageSchema)).default({}),
  mobile_home_pages: z.record(z.string(), z.array(HomePageSchema)).default({}),
  alert_action_urls: z.record(z.string(), z.array(z.string())).default({}),
  https_request_regexes: z.array(HttpsRequestRegexSchema).default([]),
});

export const PsinetSchema = z.object({
  sponsors: z.record(z.string(), PsinetSponsorSchema).default({}),
  client_versions: z.record(z.string(), z.array(z.object({ version: z.string() }))).default({}),
  default_sponsor_id: z.string().default(''),
  default_alert_action_urls: z.record(z.string(), z.array(z.string())).default({}),
  valid_server_entry_tags: z.record(z.string(), z.boolean()).default({}),
  discovery_servers: z.array(z.unknown()).default([]),
});

export type Psinet = z.infer<typeof PsinetSchema>;
export type PsinetSponsor = z.infer<typeof PsinetSponsorSchema>;

/** The home_pages key psiphond falls back to when a sponsor has no pages for the client's region. */
export const DEFAULT_REGION_KEY = 'None';
