// GeoIP lookup cost and memory: the full lookup (parse, special-range check, city + ASN data) against the
// bare MaxMind reader's get() on the same addresses, in the same run; and the RSS the bundled data costs.
// Run: node --expose-gc --import tsx bench/geoip-lookup.ts
import { open } from 'maxmind';
import { bundledGeoIpFiles, openGeoIp } from '../src/server/geoip.ts';

const ADDRESSES = 100_000;
const ROUNDS = 3;

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}
const mib = (n: number): string => (n / 1024 / 1024).toFixed(0);

// Deterministic spread of public-looking addresses, plus some IPv6.
const v4: string[] = [];
for (let i = 0; i < ADDRESSES; i++)
  v4.push(`${1 + ((i * 7919) % 222)}.${(i * 31) % 256}.${(i * 17) % 256}.${i % 256}`);
const v6: string[] = [];
for (let i = 0; i < ADDRESSES / 10; i++)
  v6.push(`2a0${i % 10}:${(i * 97).toString(16)}::${(i % 65536).toString(16)}`);

function perLookupUs(f: (ip: string) => unknown, ips: string[]): number {
  for (const ip of ips) f(ip); // warm up
  const t = performance.now();
  for (let r = 0; r < ROUNDS; r++) for (const ip of ips) f(ip);
  return ((performance.now() - t) * 1000) / (ROUNDS * ips.length);
}

gc();
const rss0 = process.memoryUsage().rss;
const t0 = performance.now();
const geo = await openGeoIp();
const loadMs = performance.now() - t0;
gc();
const rss1 = process.memoryUsage().rss;
console.log(`load: ${loadMs.toFixed(0)} ms; RSS ${mib(rss0)} -> ${mib(rss1)} MiB (+${mib(rss1 - rss0)} MiB)`);
for (const d of geo.databases()) console.log(`  ${d.kind} ${d.type}: ${d.file}`);

const [cityV4] = bundledGeoIpFiles();
const bare = await open(cityV4 as string, { cache: { max: 10_000 } });
const baseline = perLookupUs((ip) => bare.get(ip), v4);
const ours = perLookupUs((ip) => geo.lookup(ip), v4);
const ours6 = perLookupUs((ip) => geo.lookup(ip), v6);
console.log(`bare MaxMind reader get(), IPv4 city file: ${baseline.toFixed(2)} µs/lookup (baseline)`);
console.log(
  `GeoIpService.lookup, IPv4 (city + ASN):     ${ours.toFixed(2)} µs/lookup (${(ours / baseline).toFixed(2)}x)`,
);
console.log(
  `GeoIpService.lookup, IPv6 (city + ASN):     ${ours6.toFixed(2)} µs/lookup (${(ours6 / baseline).toFixed(2)}x)`,
);
