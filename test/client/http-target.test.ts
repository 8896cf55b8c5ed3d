import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  encodeRequestHead,
  filterHeaders,
  HttpProxyError,
  parseAbsoluteTarget,
  parseAuthority,
  proxyAuthorizationOk,
} from '../../src/client/http-target.ts';

const status = (fn: () => unknown): number => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof HttpProxyError, String(e));
    return e.status;
  }
  return 0;
};

describe('request targets', () => {
  it('CONNECT authorities: names, IPv4, bracketed IPv6; a port is required', () => {
    assert.deepEqual(parseAuthority('example.com:443'), { host: 'example.com', port: 443 });
    assert.deepEqual(parseAuthority('10.1.2.3:22'), { host: '10.1.2.3', port: 22 });
    assert.deepEqual(parseAuthority('[2001:db8::1]:8443'), { host: '2001:db8::1', port: 8443 });
    for (const bad of [
      'example.com',
      'example.com:',
      ':443',
      'a b:1',
      '::1:443',
      '[::1',
      '[zz]:1',
      'x:0',
      'x:65536',
      'x:+1',
    ]) {
      assert.equal(
        status(() => parseAuthority(bad)),
        400,
        bad,
      );
    }
  });

  it('absolute URIs: origin form, Host from the authority, default port, fragments dropped', () => {
    assert.deepEqual(parseAbsoluteTarget('http://Example.com/a/b?c=d#frag', 'GET'), {
      host: 'Example.com',
      port: 80,
      hostHeader: 'Example.com',
      path: '/a/b?c=d',
    });
    assert.deepEqual(parseAbsoluteTarget('HTTP://[::1]:8080?q', 'GET'), {
      host: '::1',
      port: 8080,
      hostHeader: '[::1]:8080',
      path: '/?q',
    });
    assert.equal(parseAbsoluteTarget('http://h', 'GET').path, '/');
    assert.equal(parseAbsoluteTarget('http://h', 'OPTIONS').path, '*');
    assert.equal(
      status(() => parseAbsoluteTarget('/relative', 'GET')),
      400,
    );
    assert.equal(
      status(() => parseAbsoluteTarget('https://h/', 'GET')),
      501,
    );
    assert.equal(
      status(() => parseAbsoluteTarget('gopher://h/', 'GET')),
      501,
    );
    assert.equal(
      status(() => parseAbsoluteTarget('http://u:p@h/', 'GET')),
      400,
    );
    assert.equal(
      status(() => parseAbsoluteTarget(`http://${'a'.repeat(254)}/`, 'GET')),
      400,
    );
  });

  it('hostile targets give a typed error, never a crash or a half-parsed value', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }), (a, b) => {
        for (const text of [a, `http://${a}`, `${a}:${b}`, `[${a}]:${b}`]) {
          try {
            const t = parseAuthority(text);
            assert.ok(t.port >= 1 && t.port <= 65535 && t.host.length > 0);
          } catch (e) {
            assert.ok(e instanceof HttpProxyError);
          }
          try {
            const t = parseAbsoluteTarget(text, 'GET');
            assert.ok(t.path.startsWith('/') && !t.path.includes('#'));
          } catch (e) {
            assert.ok(e instanceof HttpProxyError);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('header filtering', () => {
  // prettier-ignore
  const raw = [
    'Host', 'h',
    'Connection', 'keep-alive, X-Private',
    'X-Private', 'p',
    'Proxy-Connection', 'keep-alive',
    'Keep-Alive', '300',
    'TE', 'trailers',
    'Trailer', 'X-Sum',
    'Upgrade', 'websocket',
    'Proxy-Authorization', 'Basic x',
    'Set-Cookie', 'a=1',
    'Set-Cookie', 'b=2',
    'Transfer-Encoding', 'chunked',
  ];

  it('drops hop-by-hop and Connection-listed headers, keeps the rest in order', () => {
    // prettier-ignore
    assert.deepEqual(filterHeaders(raw), [
      'Host', 'h',
      'Set-Cookie', 'a=1',
      'Set-Cookie', 'b=2',
      'Transfer-Encoding', 'chunked',
    ]);
    assert.deepEqual(filterHeaders(raw, { drop: ['host'] }).slice(0, 2), ['Set-Cookie', 'a=1']);
  });

  it('keeps Upgrade for a WebSocket handshake', () => {
    const out = filterHeaders(raw, { drop: ['host'], keepUpgrade: true });
    assert.deepEqual(out.slice(-4), ['Transfer-Encoding', 'chunked', 'Connection', 'Upgrade']);
    assert.ok(out.includes('websocket'));
    assert.ok(!out.includes('X-Private'));
    assert.match(encodeRequestHead('GET', '/ws', out), /^GET \/ws HTTP\/1\.1\r\nUpgrade: websocket\r\n/);
  });

  it('no hop-by-hop header ever survives', () => {
    const hop = [
      'connection',
      'keep-alive',
      'proxy-connection',
      'proxy-authorization',
      'te',
      'trailer',
      'upgrade',
    ];
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(fc.oneof(fc.constantFrom(...hop, 'x-a', 'Connection', 'X-A'), fc.string()), fc.string()),
        ),
        (pairs) => {
          const out = filterHeaders(pairs.flat());
          for (let i = 0; i < out.length; i += 2) assert.ok(!hop.includes((out[i] as string).toLowerCase()));
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('Proxy-Authorization', () => {
  const creds = { username: 'alice', password: 'p:w' };
  it('accepts the right Basic credentials only', () => {
    const basic = (s: string): string => `Basic ${Buffer.from(s).toString('base64')}`;
    assert.ok(proxyAuthorizationOk(basic('alice:p:w'), creds));
    assert.ok(proxyAuthorizationOk(`basic  ${Buffer.from('alice:p:w').toString('base64')} `, creds));
    assert.ok(!proxyAuthorizationOk(basic('alice:p'), creds));
    assert.ok(!proxyAuthorizationOk(basic('alice'), creds));
    assert.ok(!proxyAuthorizationOk('Bearer x', creds));
    assert.ok(!proxyAuthorizationOk(undefined, creds));
  });
});
