/**
 * Header policy units (RFC 9110 §7.6.1): what a Connection field names is dropped on both legs,
 * and a plain `keep-alive` names nothing beyond the hop-by-hop fields.
 */
import { describe, expect, it } from 'vitest';
import { makeDropSet, mediaTypeOf, relayHeaders, relayTrailerFields, TrustedProxies, upstreamHeaders } from '../../src/http/headers.js';
import { headerSafe } from '../../src/pipeline/run.js';
import { Denial } from '../../src/errors.js';

const raw = (...pairs: string[]): Buffer[] => pairs.map((p) => Buffer.from(p, 'latin1'));

describe('response headers towards the client (relayHeaders)', () => {
  it('drops hop-by-hop fields and keeps the rest, in order, with Connection: keep-alive', () => {
    const { headers, sized } = relayHeaders(raw('Content-Type', 'application/json', 'Connection', 'keep-alive', 'Keep-Alive', 'timeout=5', 'Content-Length', '2', 'X-Trace', 'a'), null);
    expect(headers).toEqual(['Content-Type', 'application/json', 'Content-Length', '2', 'X-Trace', 'a']);
    expect(sized).toBe(true);
  });

  it('drops the fields a Connection header names, across several Connection lines and any case', () => {
    const { headers } = relayHeaders(raw('Connection', 'keep-alive, X-Hop-One', 'X-Hop-One', '1', 'connection', 'x-hop-two', 'X-HOP-TWO', '2', 'X-Kept', 'yes'), { 'dpop-nonce': 'n1' });
    expect(headers).toEqual(['X-Kept', 'yes', 'dpop-nonce', 'n1']);
  });
});

describe('request headers towards the upstream (upstreamHeaders)', () => {
  const policy = { drop: makeDropSet(true), trusted: new TrustedProxies([]), proto: 'https', upstreamHost: '127.0.0.1:3000' };
  const identity = { decisionId: 'dec_1', mission: [] };

  it('Connection: keep-alive strips nothing beyond the hop-by-hop fields', () => {
    const out = upstreamHeaders({ rawHeaders: ['Host', 'api.example.com', 'Connection', 'Keep-Alive', 'Accept', '*/*'] }, '10.0.0.1', policy, identity);
    expect(out).toEqual(['Accept', '*/*', 'x-forwarded-for', '10.0.0.1', 'x-forwarded-proto', 'https', 'x-forwarded-host', 'api.example.com', 'via', '1.1 mission-gateway', 'mission-decision', 'dec_1', 'host', '127.0.0.1:3000']);
  });

  it('Host is the policy\'s (the upstream\'s, or the public one), never the client\'s', () => {
    const host = (o: string[]): string[] => o.filter((_, i) => i > 0 && o[i - 1] === 'host');
    expect(host(upstreamHeaders({ rawHeaders: ['Host', 'internal.example'], url: '/x' }, '10.0.0.1', policy, identity))).toEqual(['127.0.0.1:3000']);
    expect(host(upstreamHeaders({ rawHeaders: ['Host', 'a'], url: 'http://internal.example/x' }, '10.0.0.1', policy, identity))).toEqual(['127.0.0.1:3000']);
  });

  it('adds the gateway to Via after the hops before it, with the protocol received (RFC 9110 section 7.6.3)', () => {
    const via = (o: string[]): string[] => o.filter((_, i) => i > 0 && o[i - 1] === 'via');
    expect(via(upstreamHeaders({ rawHeaders: ['Via', '1.1 cdn', 'Accept', '*/*', 'via', '1.1 lb'], httpVersion: '1.1' }, '10.0.0.1', policy, identity))).toEqual(['1.1 cdn, 1.1 lb, 1.1 mission-gateway']);
    expect(via(upstreamHeaders({ rawHeaders: ['Host', 'a'], httpVersion: '1.0' }, '10.0.0.1', policy, identity))).toEqual(['1.0 mission-gateway']);
  });

  it('a field named in Connection (one of several lines) does not reach the upstream', () => {
    const out = upstreamHeaders({ rawHeaders: ['Connection', 'keep-alive', 'X-A', '1', 'Connection', 'X-A, x-b', 'X-B', '2', 'X-C', '3'] }, '10.0.0.1', policy, identity);
    expect(out.filter((_, i) => i % 2 === 0)).toEqual(['X-C', 'x-forwarded-for', 'x-forwarded-proto', 'via', 'mission-decision', 'host']);
  });

  it('X-Forwarded-Host of an absolute-form target is its authority, not Host (RFC 9112 section 3.2.2)', () => {
    const out = upstreamHeaders({ rawHeaders: ['Host', 'a', 'Accept', '*/*'], url: 'http://api.example.com:8443/public/x?q' }, '10.0.0.1', policy, identity);
    expect(out[out.indexOf('x-forwarded-host') + 1]).toBe('api.example.com:8443');
    const origin = upstreamHeaders({ rawHeaders: ['Host', 'a'], url: '/public/x' }, '10.0.0.1', policy, identity);
    expect(origin[origin.indexOf('x-forwarded-host') + 1]).toBe('a');
  });
});

describe('X-Mission-* values (headerSafe, SPEC section 6)', () => {
  it('printable ASCII as is, anything else percent-encoded, a lone surrogate a denial (never a URIError)', () => {
    expect(headerSafe('agent_1@example.com')).toBe('agent_1@example.com');
    expect(headerSafe('Zoë 😀')).toBe(encodeURIComponent('Zoë 😀'));
    expect(headerSafe('a\r\nb')).toBe('a%0D%0Ab');
    for (const v of ['\ud800', 'agent\udc00', '\ude00\ud83d']) {
      let err: unknown;
      try {
        headerSafe(v);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Denial);
      expect((err as Denial).code).toBe('request_malformed');
    }
  });
});

describe('media types (mediaTypeOf: Status answers, SET pushes, token requests, MCP answers, JSON bodies)', () => {
  it('reads the type without parameters, in lower case, from the first of several; absent is ""', () => {
    expect(mediaTypeOf('Application/JSON; charset=utf-8')).toBe('application/json');
    expect(mediaTypeOf(' application/secevent+jwt ')).toBe('application/secevent+jwt');
    expect(mediaTypeOf(['text/event-stream;x=1', 'application/json'])).toBe('text/event-stream');
    expect(mediaTypeOf(undefined)).toBe('');
    expect(mediaTypeOf([])).toBe('');
  });
});

describe('trailers (r18a 6)', () => {
  const policy = { drop: makeDropSet(true), trusted: new TrustedProxies([]), proto: 'https', upstreamHost: '127.0.0.1:3000' };
  const identity = { decisionId: 'dec_1', mission: [] };
  const te = (value: string): string[] => {
    const out = upstreamHeaders({ rawHeaders: ['Host', 'api.example.com', 'TE', value] }, '10.0.0.1', policy, identity);
    return out.filter((_, i) => i > 0 && out[i - 1] === 'te');
  };

  it('the upstream is told trailers are accepted only when the client\'s TE lists the member `trailers`', () => {
    expect(te('gzip, trailers')).toEqual(['trailers']);
    expect(te(' Trailers ')).toEqual(['trailers']);
    expect(te('gzip')).toEqual([]);
    expect(te('x-trailers-y, notrailers')).toEqual([]);
  });

  it('framing, routing and authentication fields, and values Node would refuse, are not relayed as trailers', () => {
    const raw = (...pairs: string[]): Buffer[] => pairs.map((p) => Buffer.from(p, 'latin1'));
    const fields = relayTrailerFields(raw('Content-Length', '5', 'Host', 'evil.example', 'Proxy-Authenticate', 'Basic', 'Transfer-Encoding', 'chunked', 'X-Bad', 'a\x01b', 'X-Checksum', 'abc'));
    expect(fields).toEqual([['X-Checksum', 'abc']]);
  });

  it("the fields a client reads as the gateway's, and response controls, are not relayed as trailers either (r21d 2)", () => {
    const raw = (...pairs: string[]): Buffer[] => pairs.map((p) => Buffer.from(p, 'latin1'));
    const names = ['Mission-Decision', 'WWW-Authenticate', 'Set-Cookie', 'DPoP-Nonce', 'Mcp-Session-Id', 'Location', 'Cache-Control', 'Content-Type', 'Retry-After'];
    const fields = relayTrailerFields(raw(...names.flatMap((n) => [n, 'x']), 'X-Checksum', 'abc'));
    expect(fields).toEqual([['X-Checksum', 'abc']]);
    expect(relayHeaders(raw('Mission-Decision', 'dec_FORGED', 'X-Kept', '1'), null).headers).toEqual(['X-Kept', '1']);
  });

  it('Proxy-Authenticate is hop-by-hop in the response head too', () => {
    const raw = (...pairs: string[]): Buffer[] => pairs.map((p) => Buffer.from(p, 'latin1'));
    expect(relayHeaders(raw('Proxy-Authenticate', 'Basic', 'X-Kept', '1'), null).headers).toEqual(['X-Kept', '1']);
  });
});
