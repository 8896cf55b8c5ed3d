import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isPosternError } from '../../src/common/errors.ts';
import {
  EVENT_NAMES,
  EVENT_SCHEMA_VERSION,
  eventFieldNames,
  parseEvent,
  tunnelErrorCode,
  dateOfHour,
  hourOf,
} from '../../src/stats/events.ts';
import { EVENT_INVENTORY } from '../../src/privacy/index.ts';

const base = {
  schema_version: EVENT_SCHEMA_VERSION,
  timestamp: '2026-11-29T18:00:00.000Z',
  host_id: 'host-1',
  sponsor_id: '0123ABCD',
  propagation_channel_id: 'FFEE',
  client_version: '175',
  client_platform: 'Android',
  relay_protocol: 'OSSH',
  client_region: 'CA',
  client_city: 'Montreal',
  client_isp: 'Some_ISP',
  client_asn: '577',
  client_aso: 'Some_Org',
};

const serverTunnel = {
  ...base,
  event_name: 'server_tunnel',
  session_id: '0123456789abcdef',
  handshake_completed: true,
  start_time: '2026-11-29T17:00:00.000Z',
  duration_ms: 1234,
  bytes_up_tcp: 10,
  bytes_down_tcp: 20,
  bytes: 30,
  port_forwards: 2,
  port_forwards_refused: 0,
  peak_concurrent_port_forwards: 1,
};

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isPosternError(e)) return e.code;
    throw e;
  }
  return 'none';
}

describe('event schema', () => {
  it('declares every field of every event in the data inventory, and nothing the schema lacks', () => {
    for (const name of EVENT_NAMES) {
      const decl = EVENT_INVENTORY.find((e) => e.event === name);
      assert.ok(decl, `${name} is not in EVENT_INVENTORY`);
      assert.deepEqual(eventFieldNames(name).sort(), Object.keys(decl.fields).sort(), name);
    }
  });

  it('accepts a well-formed event and refuses one with an undeclared field', () => {
    assert.equal(parseEvent(serverTunnel).event_name, 'server_tunnel');
    assert.equal(
      code(() => parseEvent({ ...serverTunnel, client_ip: 'x' })),
      'BAD_EVENT',
    );
    assert.match(
      (() => {
        try {
          parseEvent({ ...serverTunnel, url: 'x' });
        } catch (e) {
          return (e as Error).message;
        }
        return '';
      })(),
      /undeclared field\(s\) url/,
    );
  });

  it('refuses addresses, minutes, negative counters and unknown kinds, without echoing the value', () => {
    const cases: Record<string, unknown>[] = [
      { ...serverTunnel, client_city: '203.0.113.7' },
      { ...serverTunnel, client_isp: 'isp 2001:db8::1' },
      { ...serverTunnel, timestamp: '2026-11-29T18:23:00.000Z' },
      { ...serverTunnel, bytes: -1 },
      { ...serverTunnel, bytes: 1.5 },
      { ...serverTunnel, schema_version: 2 },
      { ...serverTunnel, client_platform: 'Mozilla/5.0 (X11; Linux x86_64)' },
      { ...serverTunnel, event_name: 'page_view' },
      { ...base, event_name: 'domain_dest_bytes', domain: '198.51.100.4', bytes: 1 },
    ];
    for (const c of cases) {
      let message = '';
      try {
        parseEvent(c);
        assert.fail(`accepted ${JSON.stringify(c)}`);
      } catch (e) {
        assert.ok(isPosternError(e, 'BAD_EVENT'), String(e));
        message = (e as Error).message;
      }
      assert.doesNotMatch(message, /203\.0|2001:db8|198\.51|Mozilla/);
    }
  });

  it('takes hostile values with a BAD_EVENT error and nothing else', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom(...EVENT_NAMES), (v, name) => {
        const candidate =
          v !== null && typeof v === 'object' && !Array.isArray(v) ? { ...v, event_name: name } : v;
        const c = code(() => parseEvent(candidate));
        assert.ok(c === 'BAD_EVENT' || c === 'none');
      }),
      { numRuns: 300 },
    );
  });

  it('reduces error text to a code, keeping nothing of the text', () => {
    assert.equal(tunnelErrorCode('dial tcp 192.0.2.1:443: i/o timeout'), 'timeout');
    assert.equal(tunnelErrorCode('connect: connection refused'), 'refused');
    assert.equal(tunnelErrorCode('read: connection reset by peer'), 'reset');
    assert.equal(tunnelErrorCode('ssh: handshake failed: EOF'), 'ssh-handshake');
    assert.equal(tunnelErrorCode('something odd'), 'other');
  });

  it('cuts times to the hour and reads their date', () => {
    const h = hourOf(new Date('2026-11-29T23:59:59.999Z'));
    assert.equal(h, '2026-11-29T23:00:00.000Z');
    assert.equal(dateOfHour(h), '2026-11-29');
  });
});
