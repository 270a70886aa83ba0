/**
 * Published vectors: RFC 7638 section 3.1 (JWK thumbprint), RFC 9449 sections 4.1 and 7.1
 * (example proofs, `ath`), and the RFC 9449 key's thumbprint used in the Mission drafts.
 */
import * as jose from 'jose';
import { describe, expect, it } from 'vitest';
import { verifyDpopProof } from '../../src/auth/dpop.js';
import { publicJwkCore, sha256b64u, thumbprintOf } from '../../src/auth/jws.js';
import { outcome } from '../auth/helpers.js';

const RFC7638_KEY = {
  kty: 'RSA',
  n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
  e: 'AQAB',
  alg: 'RS256',
  kid: '2011-04-29',
};

const RFC9449_JWK = { kty: 'EC', x: 'l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs', y: '9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA', crv: 'P-256' };

const RFC9449_4_1_PROOF =
  'eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg';
const RFC9449_7_1_PROOF =
  'eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA';
const RFC9449_7_1_TOKEN = 'Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU';
const RFC9449_JKT = '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I';

const base = { algorithms: ['ES256'], maxAgeS: 60, clockSkewS: 5 };

describe('RFC 7638 JWK thumbprint', () => {
  it('RFC 7638 §3.1: the example RSA key hashes to NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs', async () => {
    const core = publicJwkCore(RFC7638_KEY);
    expect(core).not.toBeNull();
    expect(thumbprintOf(core!)).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
    expect(await jose.calculateJwkThumbprint(RFC7638_KEY)).toBe(thumbprintOf(core!));
  });

  it('RFC 7638 §3.2: only required members, in lexicographic order (member order and extras do not matter)', () => {
    const shuffled = { y: RFC9449_JWK.y, crv: 'P-256', x: RFC9449_JWK.x, kty: 'EC', kid: 'k', use: 'sig', alg: 'ES256' };
    expect(thumbprintOf(publicJwkCore(shuffled)!)).toBe(RFC9449_JKT);
  });

  it('RFC 9449 §4.1 example key: thumbprint 0ZcOCORZ… (cnf.jkt of the Mission drafts, vectors.json jkt-rfc9449-example)', () => {
    expect(thumbprintOf(publicJwkCore(RFC9449_JWK)!)).toBe(RFC9449_JKT);
  });
});

describe('RFC 9449 examples', () => {
  it('RFC 9449 §4.1: the example token-request proof verifies (POST https://server.example.com/token, no ath)', () => {
    const r = verifyDpopProof(RFC9449_4_1_PROOF, { ...base, method: 'POST', htu: 'https://server.example.com/token', clock: () => 1562262616_000 });
    expect(r).toEqual({ jkt: RFC9449_JKT, jti: '-BwC3ESc6acc2lTc', iat: 1562262616 });
  });

  it('RFC 9449 §7.1: the example resource-request proof verifies with ath of the example token and cnf.jkt', () => {
    expect(sha256b64u(RFC9449_7_1_TOKEN)).toBe('fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo');
    const r = verifyDpopProof(RFC9449_7_1_PROOF, {
      ...base,
      method: 'GET',
      htu: 'https://resource.example.org/protectedresource',
      accessToken: RFC9449_7_1_TOKEN,
      expectedJkt: RFC9449_JKT,
      clock: () => 1562262618_000,
    });
    expect(r).toMatchObject({ jkt: RFC9449_JKT, jti: 'e1j3V_bKic8-LAEB' });
  });

  it('RFC 9449 §4.3 step 11: the same example proof is refused once it is older than max_age_s', async () => {
    const opts = { ...base, method: 'POST', htu: 'https://server.example.com/token', clock: () => (1562262616 + 120) * 1000 };
    expect(await outcome(() => verifyDpopProof(RFC9449_4_1_PROOF, opts))).toBe('dpop_invalid');
  });

  it('RFC 9449 §4.3 step 12: the §7.1 proof with another access token fails ath', async () => {
    const opts = { ...base, method: 'GET', htu: 'https://resource.example.org/protectedresource', accessToken: 'other', clock: () => 1562262618_000 };
    expect(await outcome(() => verifyDpopProof(RFC9449_7_1_PROOF, opts))).toBe('dpop_invalid');
  });
});
