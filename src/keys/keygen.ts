/**
 * `mission-gateway keygen <file>`: writes a new private key as a JWK (ES256 by default, or EdDSA)
 * with mode 0600, and prints its public JWK on stdout, for `mission.client.private_key_file`,
 * `evidence.sign.private_key_file`, or registering the gateway as a client at an authority.
 */
import { generateKeyPairSync, createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

const USAGE = 'usage: mission-gateway keygen <file> [--alg ES256|EdDSA] [--kid <kid>] [--force]\n';

export function keygenCli(argv: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { alg: { type: 'string' }, kid: { type: 'string' }, force: { type: 'boolean' } }, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`keygen: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const file = parsed.positionals[0];
  const alg = parsed.values.alg ?? 'ES256';
  const problem =
    file === undefined ? 'the key file to write is required'
    : parsed.positionals.length > 1 ? `one key file only (got ${parsed.positionals.length})`
    : alg !== 'ES256' && alg !== 'EdDSA' ? `--alg ${alg} is not supported: ES256 (the default) or EdDSA`
    : null;
  if (problem !== null || file === undefined) {
    process.stderr.write(`keygen: ${problem}\n${USAGE}`);
    return 2;
  }
  if (existsSync(file) && parsed.values.force !== true) {
    process.stderr.write(`keygen: ${file} exists (use --force to replace it)\n`);
    return 2;
  }
  const { privateKey, publicKey } = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const pub = publicKey.export({ format: 'jwk' }) as Record<string, string>;
  // RFC 7638 thumbprint as the default kid.
  const members = alg === 'ES256' ? { crv: pub['crv'], kty: pub['kty'], x: pub['x'], y: pub['y'] } : { crv: pub['crv'], kty: pub['kty'], x: pub['x'] };
  const kid = parsed.values.kid ?? createHash('sha256').update(JSON.stringify(members)).digest('base64url');
  mkdirSync(dirname(file), { recursive: true });
  // `mode` applies only to a file writeFileSync creates: one replaced (--force) keeps its mode, so
  // it is made owner-only before the private key goes in (r20b 4).
  if (existsSync(file)) chmodSync(file, 0o600);
  writeFileSync(file, JSON.stringify({ ...(privateKey.export({ format: 'jwk' }) as object), alg, kid, use: 'sig' }, null, 2) + '\n', { mode: 0o600 });
  process.stdout.write(JSON.stringify({ ...pub, alg, kid, use: 'sig' }) + '\n');
  process.stderr.write(`wrote ${file} (private, mode 0600); its public JWK is above\n`);
  return 0;
}
