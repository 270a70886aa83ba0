import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IdJagRejection } from '../../src/idjag/projection.js';
import { classifyTokenRequest, declaresIdJag, GRANT_JWT_BEARER, type RequestParts } from '../../src/idjag/request.js';

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
const jwt = (typ: unknown): string => `${b64({ alg: 'ES256', typ })}.${b64({ iss: 'x' })}.c2ln`;
const ID_JAG = jwt('oauth-id-jag+jwt');
const FORM = 'application/x-www-form-urlencoded';

function req(body: string | null, over: Partial<RequestParts> = {}): RequestParts {
  return { search: '', contentType: FORM, contentEncoding: undefined, body: body === null ? null : Buffer.from(body), ...over };
}

function malformed(parts: RequestParts): void {
  try {
    classifyTokenRequest(parts);
  } catch (err) {
    expect(err).toBeInstanceOf(IdJagRejection);
    expect((err as IdJagRejection).reason).toBe('request_malformed');
    return;
  }
  throw new Error('expected request_malformed');
}

describe('SPEC section 8: which token requests are ID-JAG grants', () => {
  it('RFC 7523 section 2.1: a jwt-bearer grant with an oauth-id-jag+jwt assertion is an ID-JAG grant', () => {
    const r = classifyTokenRequest(req(`grant_type=${encodeURIComponent(GRANT_JWT_BEARER)}&assertion=${ID_JAG}&scope=crm.notes.write`));
    expect(r).toEqual({ kind: 'id_jag', assertion: ID_JAG });
  });

  it('typ is compared case-insensitively, with or without application/', () => {
    expect(declaresIdJag(jwt('application/OAUTH-ID-JAG+JWT'))).toBe(true);
    expect(declaresIdJag(jwt('Oauth-Id-Jag+Jwt'))).toBe(true);
  });

  it('a jwt-bearer grant whose assertion has another typ (or none, or does not decode) is not an ID-JAG', () => {
    for (const assertion of [jwt('JWT'), jwt(undefined), jwt(7), 'not-a-jwt', '', '.x.y', `${b64([1])}.x.y`]) {
      expect(classifyTokenRequest(req(`grant_type=${GRANT_JWT_BEARER}&assertion=${assertion}`))).toEqual({ kind: 'jwt_bearer' });
    }
    expect(classifyTokenRequest(req(`grant_type=${GRANT_JWT_BEARER}`))).toEqual({ kind: 'jwt_bearer' });
  });

  it('other grants, and requests without a grant, are not the guard’s business', () => {
    expect(classifyTokenRequest(req('grant_type=client_credentials&scope=a'))).toEqual({ kind: 'other' });
    expect(classifyTokenRequest(req(`grant_type=authorization_code&assertion=${ID_JAG}`))).toEqual({ kind: 'other' });
    expect(classifyTokenRequest(req(null))).toEqual({ kind: 'other' });
    expect(classifyTokenRequest(req('', { contentType: undefined }))).toEqual({ kind: 'other' });
  });

  it('a grant_type that differs only in case or surrounding space is still a jwt-bearer grant', () => {
    const upper = encodeURIComponent(` ${GRANT_JWT_BEARER.toUpperCase()} `);
    expect(classifyTokenRequest(req(`grant_type=${upper}&assertion=${ID_JAG}`))).toEqual({ kind: 'id_jag', assertion: ID_JAG });
  });

  it('the query string counts as well as the body', () => {
    const r = classifyTokenRequest(req(null, { search: `?grant_type=${GRANT_JWT_BEARER}&assertion=${ID_JAG}` }));
    expect(r).toEqual({ kind: 'id_jag', assertion: ID_JAG });
  });

  it('the media type may carry parameters and any case', () => {
    const r = classifyTokenRequest(req(`grant_type=${GRANT_JWT_BEARER}&assertion=${ID_JAG}`, { contentType: 'Application/X-WWW-Form-Urlencoded; charset=UTF-8' }));
    expect(r.kind).toBe('id_jag');
  });
});

describe('RFC 6749 section 3.2: a request the guard cannot read as the AS would is refused', () => {
  it('rejects a repeated grant_type (the guard and the AS could pick different copies)', () => {
    malformed(req(`grant_type=client_credentials&grant_type=${GRANT_JWT_BEARER}&assertion=${ID_JAG}`));
  });

  it('rejects a repeated assertion, also across query and body', () => {
    malformed(req(`grant_type=${GRANT_JWT_BEARER}&assertion=${jwt('JWT')}&assertion=${ID_JAG}`));
    malformed(req(`grant_type=${GRANT_JWT_BEARER}&assertion=${ID_JAG}`, { search: `?assertion=${jwt('JWT')}` }));
    malformed(req('grant_type=client_credentials', { search: `?grant_type=${GRANT_JWT_BEARER}` }));
  });

  it('rejects a form in a charset whose ASCII is not ASCII (utf-16, utf-7; an AS honouring it reads another grant), and control characters in the grant parameters (an AS in C stops at a NUL)', () => {
    malformed(req(`grant_type=${GRANT_JWT_BEARER}&assertion=${ID_JAG}`, { contentType: `${FORM}; charset*=''utf-16le` }));
    for (const cs of ['utf-16le', '"UTF-16"', 'utf-7', '']) malformed(req(`grant_type=${GRANT_JWT_BEARER}&assertion=${ID_JAG}`, { contentType: `${FORM}; charset=${cs}` }));
    for (const cs of ['utf-8', 'UTF-8', 'us-ascii', 'iso-8859-1']) expect(classifyTokenRequest(req('grant_type=client_credentials', { contentType: `${FORM}; charset=${cs}` })).kind).toBe('other');
    malformed(req(`grant_type=${encodeURIComponent(GRANT_JWT_BEARER)}%00&assertion=${ID_JAG}`));
    malformed(req(`grant_type=client_credentials%00`));
    malformed(req(`grant_type=${encodeURIComponent(GRANT_JWT_BEARER)}&assertion=${ID_JAG}%01`));
    // White space around a value stays lenient (trimmed as an AS would).
    expect(classifyTokenRequest(req(`grant_type=%20${encodeURIComponent(GRANT_JWT_BEARER)}%0A&assertion=${ID_JAG}`))).toEqual({ kind: 'id_jag', assertion: ID_JAG });
  });

  it('rejects an encrypted assertion (JWE: five parts, or an enc header), a nested JWT (cty: JWT) and a JSON-serialized one: the guard cannot see whether it is an ID-JAG (r17c 1, r17f)', () => {
    const jwe = `${b64({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: 'JWT' })}.a2V5.aXY.Y2lwaGVy.dGFn`;
    const nested = `${b64({ alg: 'ES256', cty: 'jwt' })}.${Buffer.from(ID_JAG).toString('base64url')}.c2ln`;
    // Each layer alone (r18a 5): a five-part value whose header names no `enc`, and the nested
    // JWT's media type in its other spellings (RFC 7515 section 4.1.10: `application/` may go).
    const fivePartsNoEnc = `${b64({ alg: 'dir' })}.a2V5.aXY.Y2lwaGVy.dGFn`;
    const nestedAs = (cty: string): string => `${b64({ alg: 'ES256', cty })}.${Buffer.from(ID_JAG).toString('base64url')}.c2ln`;
    const spellings = ['application/jwt', 'Application/JWT', ' JWT ', 'jwt'].map(nestedAs);
    for (const assertion of [jwe, `${b64({ alg: 'dir', enc: 'A256GCM' })}.x.y`, JSON.stringify({ payload: 'x', signatures: [] }), nested, fivePartsNoEnc, ...spellings]) {
      malformed(req(`grant_type=${GRANT_JWT_BEARER}&assertion=${encodeURIComponent(assertion)}`));
    }
    // Another grant's parameters are not the guard's business, whatever they hold.
    expect(classifyTokenRequest(req(`grant_type=client_credentials&assertion=${jwe}`)).kind).toBe('other');
  });

  it('rejects a body that is not a form (JSON, no content type) or is content-encoded', () => {
    malformed(req(JSON.stringify({ grant_type: GRANT_JWT_BEARER, assertion: ID_JAG }), { contentType: 'application/json' }));
    malformed(req(`grant_type=${GRANT_JWT_BEARER}`, { contentType: undefined }));
    malformed(req(`grant_type=${GRANT_JWT_BEARER}`, { contentEncoding: 'gzip' }));
    expect(classifyTokenRequest(req('grant_type=client_credentials', { contentEncoding: 'identity' })).kind).toBe('other');
  });
});

describe('names, values and headers an AS may read more leniently than the guard (attack run r11a)', () => {
  const grant = encodeURIComponent(GRANT_JWT_BEARER);

  it('grant parameters named in another case or shape (.NET, Java equalsIgnoreCase, PHP) are the grant parameters', () => {
    for (const [g, a] of [['GRANT_TYPE', 'ASSERTION'], ['Grant_Type', 'Assertion'], ['grant_type[]', 'assertion[]'], ['grant.type', '%20assertion']]) {
      expect(classifyTokenRequest(req(`${g}=${grant}&${a}=${ID_JAG}`)), `${g} ${a}`).toEqual({ kind: 'id_jag', assertion: ID_JAG });
    }
    // Beside the exact name it is a second copy: refused, like any repeated parameter.
    malformed(req(`grant_type=client_credentials&GRANT_TYPE=${grant}&assertion=${ID_JAG}`));
    malformed(req(`grant_type=${grant}&assertion=${jwt('JWT')}&Assertion=${ID_JAG}`));
    // A bracket before a newline (r19c's lead: the old pattern's `.` stopped at the newline) and a NUL.
    malformed(req(`grant_type=${grant}&assertion=${jwt('JWT')}&assertion%5B%0A%5D=${ID_JAG}`));
    malformed(req(`grant_type=${grant}&assertion=${jwt('JWT')}&assertion%00x=${ID_JAG}`));
  });

  it('a grant type with a letter another language folds onto ASCII (ſ, dotless ı) is the jwt-bearer grant', () => {
    for (const g of [GRANT_JWT_BEARER.replace('s', '\u017f'), GRANT_JWT_BEARER.replace('i', '\u0131')]) {
      expect(classifyTokenRequest(req(`grant_type=${encodeURIComponent(g)}&assertion=${ID_JAG}`)).kind, g).toBe('id_jag');
    }
  });

  it('an assertion header larger than 4 KiB (an x5c chain) is still read, and one past the JWS limit refused', () => {
    const big = `${b64({ alg: 'ES256', typ: 'oauth-id-jag+jwt', x5c: ['A'.repeat(6000)] })}.${b64({ iss: 'x' })}.c2ln`;
    expect(declaresIdJag(big)).toBe(true);
    const huge = `${b64({ alg: 'ES256', typ: 'JWT', x5c: ['A'.repeat(20_000)] })}.${b64({ iss: 'x' })}.c2ln`;
    malformed(req(`grant_type=${grant}&assertion=${huge}`));
  });

  it('a typ with parameters or spaces declares an ID-JAG (verification then refuses it); a typ named twice is refused', () => {
    expect(declaresIdJag(jwt('oauth-id-jag+jwt; v=1'))).toBe(true);
    expect(declaresIdJag(jwt(' oauth-id-jag+jwt '))).toBe(true);
    const twice = `${Buffer.from('{"alg":"ES256","typ":"oauth-id-jag+jwt","typ":"JWT"}').toString('base64url')}.${b64({ iss: 'x' })}.c2ln`;
    malformed(req(`grant_type=${grant}&assertion=${twice}`));
  });

  it("';' as a separator some servers use: refused when it would change the grant parameters, ignored otherwise", () => {
    malformed(req(`grant_type=${grant};assertion=${ID_JAG}`));
    malformed(req(`grant_type=client_credentials;grant_type=${grant}&assertion=${ID_JAG}`));
    expect(classifyTokenRequest(req('grant_type=client_credentials&scope=a;b')).kind).toBe('other');
  });
});

describe('property: no parser choice lets an ID-JAG grant past the guard unchecked', () => {
  const key = fc.constantFrom('grant_type', 'assertion', 'scope', 'client_id');
  const value = fc.constantFrom(GRANT_JWT_BEARER, ` ${GRANT_JWT_BEARER.toUpperCase()}`, 'client_credentials', ID_JAG, jwt('JWT'), 'x');
  const pairs = fc.array(fc.tuple(key, value), { maxLength: 6 });

  /** What an AS would see, taking the first or the last copy of each parameter. */
  function asSees(all: [string, string][], pick: 'first' | 'last'): { grant: string | undefined; assertion: string | undefined } {
    const seen: Record<string, string> = {};
    for (const [k, v] of pick === 'first' ? all : [...all].reverse()) if (!(k in seen)) seen[k] = v;
    return { grant: seen['grant_type'], assertion: seen['assertion'] };
  }

  it('whenever some AS would read a jwt-bearer grant with an ID-JAG, the guard checks it or refuses the request', () => {
    fc.assert(
      fc.property(pairs, pairs, fc.boolean(), (bodyPairs, queryPairs, useQuery) => {
        const query = useQuery ? queryPairs : [];
        const body = new URLSearchParams(bodyPairs).toString();
        const search = query.length === 0 ? '' : '?' + new URLSearchParams(query).toString();
        let kind: string;
        try {
          kind = classifyTokenRequest(req(body, { search })).kind;
        } catch (err) {
          expect((err as IdJagRejection).reason).toBe('request_malformed');
          return;
        }
        for (const all of [bodyPairs, [...query, ...bodyPairs], [...bodyPairs, ...query]]) {
          for (const pick of ['first', 'last'] as const) {
            const seen = asSees(all, pick);
            if (seen.grant?.trim().toLowerCase() === GRANT_JWT_BEARER && seen.assertion === ID_JAG) expect(kind).toBe('id_jag');
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});
