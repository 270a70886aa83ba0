/**
 * The authority's signing keys: ES256, generated at start (or loaded from a folder), rotated on
 * demand. A retired key stays in the JWKS for `retainSeconds` so that tokens and Status responses
 * it signed keep verifying while consumers refetch the key set.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  importPKCS8,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';

export const SIGNING_ALG = 'ES256';

interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
  /** Epoch ms after which a retired key leaves the JWKS; null while current. */
  dropAt: number | null;
}

export interface KeyRingOptions {
  readonly retainSeconds: number;
  readonly now: () => number;
  /** Folder of private keys (JWK JSON or PKCS#8 PEM); a new key is written there when empty. */
  readonly dir?: string | undefined;
}

export class KeyRing {
  private current: SigningKey;
  private retired: SigningKey[] = [];

  private constructor(first: SigningKey, private readonly opts: KeyRingOptions) {
    this.current = first;
  }

  static async create(opts: KeyRingOptions): Promise<KeyRing> {
    const loaded = opts.dir === undefined ? undefined : await loadFirstKey(opts.dir);
    if (loaded !== undefined) return new KeyRing(loaded, opts);
    const fresh = await newKey(opts.dir);
    return new KeyRing(fresh, opts);
  }

  get kid(): string {
    return this.current.kid;
  }

  /** Public keys: the current one first, then retired ones still inside their retention window. */
  jwks(): { keys: JWK[] } {
    const now = this.opts.now();
    this.retired = this.retired.filter((k) => k.dropAt !== null && k.dropAt > now);
    return { keys: [this.current.publicJwk, ...this.retired.map((k) => k.publicJwk)] };
  }

  async rotate(): Promise<void> {
    const next = await newKey(this.opts.dir);
    const old = this.current;
    old.dropAt = this.opts.now() + this.opts.retainSeconds * 1000;
    this.retired.unshift(old);
    this.current = next;
  }

  /** Signs `payload` as a compact JWS with the current key; `typ` goes in the protected header. */
  sign(payload: JWTPayload, typ: string, extraHeader: Record<string, unknown> = {}): Promise<string> {
    return new SignJWT(payload)
      .setProtectedHeader({ ...extraHeader, alg: SIGNING_ALG, typ, kid: this.current.kid })
      .sign(this.current.privateKey);
  }
}

/** A fresh key, saved to `dir` when given; the in-memory key is not extractable. */
async function newKey(dir: string | undefined): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  const key = await fromPrivateJwk(await exportJWK(privateKey));
  if (dir !== undefined) await saveKey(dir, { ...(await exportJWK(privateKey)), kid: key.kid });
  return key;
}

async function fromPrivateJwk(jwk: JWK): Promise<SigningKey> {
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string') {
    throw new Error('dev-authority keys must be P-256 private keys (ES256)');
  }
  const { d: _d, ...pub } = jwk;
  const kid = typeof jwk.kid === 'string' ? jwk.kid : await calculateJwkThumbprint(pub, 'sha256');
  const privateKey = (await importJWK({ ...jwk, kid }, SIGNING_ALG)) as CryptoKey;
  const publicJwk: JWK = { kty: pub.kty, crv: pub.crv, x: pub.x, y: pub.y, kid, alg: SIGNING_ALG, use: 'sig' } as JWK;
  return { kid, privateKey, publicJwk, dropAt: null };
}

async function loadFirstKey(dir: string): Promise<SigningKey | undefined> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => /\.(jwk|json|pem)$/.test(n)).sort();
  } catch {
    return undefined;
  }
  // Newest file name last (saveKey names files by time), so the latest saved key signs.
  const name = names.at(-1);
  if (name === undefined) return undefined;
  const text = await readFile(join(dir, name), 'utf8');
  if (name.endsWith('.pem')) {
    const key = await importPKCS8(text, SIGNING_ALG, { extractable: true });
    return fromPrivateJwk(await exportJWK(key));
  }
  return fromPrivateJwk(JSON.parse(text) as JWK);
}

async function saveKey(dir: string, jwk: JWK): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const name = `${Date.now().toString().padStart(15, '0')}-${randomBytes(3).toString('hex')}.jwk`;
  await writeFile(join(dir, name), JSON.stringify(jwk), { mode: 0o600 });
}
