/**
 * Evidence signing keys (SPEC section 2: a private JWK (JSON) or a PKCS#8 PEM), ES256 only.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly kid: string;
}

function assertP256(key: KeyObject): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    const type = key.asymmetricKeyType === 'ec' ? `EC ${key.asymmetricKeyDetails?.namedCurve ?? ''}`.trim() : (key.asymmetricKeyType ?? 'unknown').toUpperCase().replace('ED', 'Ed');
    throw new Error(`the evidence signing key must be an EC P-256 key (ES256), not ${type}; \`mission-gateway keygen <file>\` makes one`);
  }
}

/** RFC 7638 thumbprint of a P-256 public key. */
export function thumbprint(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: 'jwk' });
  const canonical = `{"crv":"${String(jwk.crv)}","kty":"EC","x":"${String(jwk.x)}","y":"${String(jwk.y)}"}`;
  return createHash('sha256').update(canonical).digest('base64url');
}

/** Parses key file contents: JSON (a JWK) or PEM. Never echoes the contents in errors. */
function parseKey(text: string, kind: 'private' | 'public'): { key: KeyObject; kid: string | undefined } {
  const trimmed = text.trim();
  try {
    if (trimmed.startsWith('{')) {
      const jwk = JSON.parse(trimmed) as Record<string, unknown> & { kid?: unknown; d?: unknown };
      const kid = typeof jwk.kid === 'string' ? jwk.kid : undefined;
      if (kind === 'private') return { key: createPrivateKey({ key: jwk as never, format: 'jwk' }), kid };
      const { d: _d, ...pub } = jwk;
      return { key: createPublicKey({ key: pub as never, format: 'jwk' }), kid };
    }
    return { key: kind === 'private' ? createPrivateKey(trimmed) : createPublicKey(trimmed), kid: undefined };
  } catch {
    throw new Error(`the ${kind} key file is not a ${kind} JWK or PEM`);
  }
}

export async function loadSigningKey(file: string, kid?: string): Promise<SigningKey> {
  return signingKey(await readFile(file, 'utf8'), kid);
}

/** A signing key from a key file's contents; throws (without the contents) unless it is a private P-256 key. */
export function signingKey(text: string, kid?: string): SigningKey {
  const { key, kid: jwkKid } = parseKey(text, 'private');
  assertP256(key);
  const publicKey = createPublicKey(key);
  return { privateKey: key, publicKey, kid: kid ?? jwkKid ?? thumbprint(publicKey) };
}

/**
 * The public keys of a file, for verification: a JWK or PEM (a private one gives its public half),
 * or a JWK Set (`{"keys": [...]}`), one key per signing key a file's records were signed with.
 */
export async function loadVerificationKeys(file: string): Promise<KeyObject[]> {
  const text = await readFile(file, 'utf8');
  let set: unknown;
  try {
    set = text.trim().startsWith('{') ? (JSON.parse(text) as { keys?: unknown }).keys : undefined;
  } catch {
    set = undefined; // parseKey reports it
  }
  if (set === undefined) {
    const { key } = parseKey(text, 'public');
    assertP256(key);
    return [key];
  }
  if (!Array.isArray(set) || set.length === 0) throw new Error('the public key file is a JWK Set without keys');
  return set.map((jwk) => {
    const { key } = parseKey(JSON.stringify(jwk), 'public');
    assertP256(key);
    return key;
  });
}
