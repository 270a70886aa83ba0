/**
 * Loading a config file: YAML or JSON, `${ENV}` substitution in string values, validation against
 * the schema with every problem reported by key path, relative file paths resolved against the
 * config file's folder, and the result deeply frozen.
 */
import { parseClientKey } from '../mission/client-key.js';
import { createPrivateKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isAlias, isNode, isScalar, LineCounter, parseDocument, visit, type YAMLError } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config } from './schema.js';
import { deepFreeze } from '../values.js';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  /**
   * What the file asks of the machine (key files, the evidence file), read from the parts that
   * validated: `check` reports their problems beside the schema's, all at once (r21e 1).
   */
  readonly needs: MachineNeeds | undefined;
  constructor(problems: readonly string[], needs?: MachineNeeds) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
    this.needs = needs;
  }
}

/** The files a config names that start reads or writes on this machine, resolved in its folder. */
export interface MachineNeeds {
  readonly clientKey?: string | undefined;
  readonly signKey?: string | undefined;
  readonly signKid?: string | undefined;
  readonly sink?: string | undefined;
}

export function machineNeeds(config: Config): MachineNeeds {
  return { clientKey: config.mission.client?.private_key_file, signKey: config.evidence.sign?.private_key_file, signKid: config.evidence.sign?.kid, sink: config.evidence.sink };
}

/** The same from a file the schema refused: only string values at key paths no problem names. */
function rawNeeds(raw: unknown, folder: string, problems: readonly string[]): MachineNeeds {
  const at = (path: string): string | undefined => {
    if (problems.some((p) => p.startsWith(`${path}:`) || p.startsWith(`${path}.`) || path.startsWith(p.slice(0, p.indexOf(': ')) + '.'))) return undefined;
    let v: unknown = raw;
    for (const k of path.split('.')) v = v !== null && typeof v === 'object' && !Array.isArray(v) && Object.hasOwn(v, k) ? (v as Record<string, unknown>)[k] : undefined;
    return typeof v === 'string' && v !== '' ? v : undefined;
  };
  const file = (path: string): string | undefined => {
    const v = at(path);
    return v === undefined ? undefined : resolveIn(folder, v);
  };
  const sink = at('evidence.sink');
  return {
    clientKey: file('mission.client.private_key_file'),
    signKey: file('evidence.sign.private_key_file'),
    signKid: at('evidence.sign.kid'),
    sink: sink === undefined || sink === 'stdout' || sink === 'stderr' ? sink : resolveIn(folder, sink),
  };
}

/** `routes[2].match.path` from ['routes', 2, 'match', 'path']. */
export function keyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out === '' ? '(root)' : out;
}

function formatIssues(issues: readonly z.core.$ZodIssue[], input: unknown, skip: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const issue of issues) {
    const at = keyPath(issue.path);
    // A value whose \${ENV} was not set is reported once, not again as a malformed value.
    if (skip.has(at)) continue;
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) out.push(`${keyPath([...issue.path, k])}: unknown key`);
    } else if (issue.code === 'invalid_union' && 'errors' in issue && issue.errors.length > 0 && issue.message === 'Invalid input') {
      out.push(`${at}: does not match any allowed form`);
    } else if (issue.code === 'invalid_type' && valueAt(input, issue.path) === undefined) {
      out.push(`${at}: is required`);
    } else {
      out.push(`${at}: ${humanize(issue)}`);
    }
  }
  return out;
}

/** The raw value at a key path, or undefined where the path leads nowhere (a missing key). */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

function humanize(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type') {
    return issue.message.startsWith('Invalid input: expected') ? `must be ${issue.expected}` : issue.message;
  }
  // zod's own wording ("Too small: expected number to be >=1") in the style of the other messages.
  if ((issue.code === 'too_small' || issue.code === 'too_big') && issue.message.startsWith('Too ')) {
    const small = issue.code === 'too_small';
    const bound = small ? issue.minimum : issue.maximum;
    const inclusive = issue.inclusive !== false;
    if (issue.origin === 'number' || issue.origin === 'int') return `must be ${small ? '>' : '<'}${inclusive ? '=' : ''} ${String(bound)}`;
    if (issue.origin === 'array') return `must have ${small ? 'at least' : 'at most'} ${String(bound)} item${bound === 1 ? '' : 's'}`;
    if (issue.origin === 'string') return small && bound === 1 ? 'must not be empty' : `must have ${small ? 'at least' : 'at most'} ${String(bound)} characters`;
  }
  if (issue.code === 'invalid_union' && issue.message.startsWith('Invalid discriminator value. Expected ')) {
    return `must be one of ${issue.message.slice('Invalid discriminator value. Expected '.length).replaceAll(' | ', ', ')}`;
  }
  return issue.message;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Replaces `${NAME}` and `${NAME:-default}` in every string; an unset variable without a default is a problem. */
function substitute(value: unknown, path: PropertyKey[], env: NodeJS.ProcessEnv, problems: string[]): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_m, name: string, fallback: string | undefined) => {
      const v = env[name];
      if (v !== undefined) return v;
      if (fallback !== undefined) return fallback;
      problems.push(`${keyPath(path)}: environment variable ${name} is not set`);
      return '';
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, [...path, i], env, problems));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substitute(v, [...path, k], env, problems);
    return out;
  }
  return value;
}

export interface LoadedConfig {
  readonly config: Config;
  readonly file: string;
  readonly folder: string;
}

/**
 * Far larger than any real config. It bounds the parse, which on SIGHUP runs on the event loop: a
 * hostile or broken file must not stall the running gateway.
 */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** Problems reported for one file: enough to fix it, not a log line of megabytes. */
const MAX_PROBLEMS = 100;

/**
 * A YAML error by its code and place only: the parser's own messages quote the source (an alias
 * name, a tag, the line itself), which may be a secret written in the file.
 */
function yamlProblem(err: YAMLError): string {
  const at = err.linePos?.[0];
  const where = at === undefined ? '' : ` at line ${at.line}, column ${at.col}`;
  return `${YAML_PROBLEMS[err.code] ?? 'not valid YAML'} (${err.code})${where}`;
}

const YAML_PROBLEMS: Partial<Record<YAMLError['code'], string>> = {
  MULTIPLE_DOCS: 'Source contains multiple documents; a config file is one',
  BAD_ALIAS: 'an alias (*name) that names no anchor',
  TAG_RESOLVE_FAILED: 'an unknown tag (!name)',
  BAD_SCALAR_START: 'a plain value that cannot start with this character (quote it)',
  BAD_INDENT: 'bad indentation',
  TAB_AS_INDENT: 'a tab used as indentation',
  DUPLICATE_KEY: 'Map keys must be unique',
  BAD_DQ_ESCAPE: 'an invalid escape in a double-quoted string',
  MISSING_CHAR: 'a missing character (a closing quote or bracket, a comma, or a space after ":")',
  UNEXPECTED_TOKEN: 'unexpected text',
};

/**
 * YAML to a plain value. Rejects syntax errors, warnings (an unknown tag such as `!!js/function`),
 * a second document (`---`: its settings would be dropped unread), and duplicate keys, compared as
 * the property names they become (`1` and `"1"`, an alias and the key it names). The yaml library's
 * own duplicate-key check compares every pair of a mapping's keys, so 40,000 keys took 10 s; this
 * check is one pass with a Set per mapping. A key must be a scalar, and never `__proto__`: copied
 * into an object, that would set its prototype, and its members would be read as config keys
 * nobody wrote (`__proto__: { dpop: { required: false } }` turned DPoP off, r13a).
 */
function parseYamlStrict(text: string): unknown {
  const lines = new LineCounter();
  // logLevel 'error', not 'silent': the latter also drops the error for a second document.
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: false, logLevel: 'error', lineCounter: lines });
  const first = doc.errors[0] ?? doc.warnings[0];
  if (first !== undefined) throw new Error(yamlProblem(first));
  let problem: string | null = null;
  const place = (node: unknown): string => {
    const at = isNode(node) && node.range ? lines.linePos(node.range[0]) : null;
    return at === null ? '' : ` at line ${at.line}, column ${at.col}`;
  };
  // Each alias resolved below walks the whole document (yaml's Alias.resolve without a context):
  // counted first, so a file of thousands of them is refused before it costs seconds of a live
  // gateway's event loop on SIGHUP (r20b 1). toJS allows no more expansions than this either.
  let aliases = 0;
  visit(doc, {
    Alias() {
      return ++aliases > MAX_ALIASES ? visit.BREAK : undefined;
    },
  });
  if (aliases > MAX_ALIASES) throw new Error(`more than ${MAX_ALIASES} YAML aliases (*name)`);
  visit(doc, {
    // toJS would throw for it, with the alias's name (the text written there) in its message.
    Alias(_key, alias) {
      if (alias.resolve(doc) !== undefined) return undefined;
      problem = `${YAML_PROBLEMS.BAD_ALIAS} (BAD_ALIAS)${place(alias)}`;
      return visit.BREAK;
    },
    Map(_key, map) {
      const seen = new Set<string>();
      for (const pair of map.items) {
        const node = isAlias(pair.key) ? pair.key.resolve(doc) : pair.key;
        const where = place(pair.key);
        if (!isScalar(node)) {
          problem = `a key must be a plain value, not a mapping or a list${where}`;
          return visit.BREAK;
        }
        // As toJS names the property: a null key (`~`, or none) becomes "", not "null".
        const k = node.value === null ? '' : String(node.value);
        if (k === '__proto__') {
          problem = `__proto__ is not a config key${where}`;
          return visit.BREAK;
        }
        if (seen.has(k)) {
          problem = `Map keys must be unique: ${JSON.stringify(k).slice(0, 80)}${where}`;
          return visit.BREAK;
        }
        seen.add(k);
      }
      return undefined;
    },
  });
  if (problem !== null) throw new Error(problem);
  return doc.toJS({ maxAliasCount: MAX_ALIASES });
}

const MAX_ALIASES = 100;

/** Parses raw text (YAML is a superset of JSON) and validates it. Throws ConfigError with every problem. */
export function parseConfigText(text: string, folder: string, env: NodeJS.ProcessEnv = process.env): Config {
  if (text.length > MAX_CONFIG_BYTES) throw new ConfigError([`(file): larger than ${MAX_CONFIG_BYTES} bytes`]);
  let raw: unknown;
  try {
    raw = parseYamlStrict(text);
  } catch (err) {
    throw new ConfigError([`(file): ${(err as Error).message.split('\n')[0]}`]);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(['(root): must be a mapping of config keys']);
  }
  const problems: string[] = [];
  const substituted = substitute(raw, [], env, problems);
  const result = configSchema.safeParse(substituted);
  if (!result.success) problems.push(...formatIssues(result.error.issues, substituted, new Set(problems.map((p) => p.slice(0, p.indexOf(': '))))));
  if (problems.length > 0 || !result.success) throw new ConfigError(problems.length <= MAX_PROBLEMS ? problems : [...problems.slice(0, MAX_PROBLEMS), `(and ${problems.length - MAX_PROBLEMS} more problems)`], rawNeeds(substituted, folder, problems));
  return deepFreeze(resolvePaths(result.data, folder));
}

function resolveIn(folder: string, p: string): string {
  return isAbsolute(p) ? p : resolve(folder, p);
}

function resolvePaths(c: Config, folder: string): Config {
  const out = structuredClone(c);
  if (out.mission.client) out.mission.client.private_key_file = resolveIn(folder, out.mission.client.private_key_file);
  if (out.evidence.sink !== 'stdout' && out.evidence.sink !== 'stderr') out.evidence.sink = resolveIn(folder, out.evidence.sink);
  if (out.evidence.sign) out.evidence.sign.private_key_file = resolveIn(folder, out.evidence.sign.private_key_file);
  return out;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const abs = resolve(file);
  let text: string;
  try {
    if (statSync(abs).size > MAX_CONFIG_BYTES) throw new ConfigError([`(file): ${abs} is larger than ${MAX_CONFIG_BYTES} bytes`]);
    // Decoded strictly: a byte that is not UTF-8 would become U+FFFD, a value the file does not hold.
    text = UTF8.decode(readFileSync(abs));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if ((err as { code?: string }).code === 'ERR_ENCODING_INVALID_ENCODED_DATA') throw new ConfigError([`(file): ${abs} is not UTF-8 text`]);
    throw new ConfigError([`(file): cannot read ${abs}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
  }
  const folder = dirname(abs);
  return { config: parseConfigText(text, folder, env), file: abs, folder };
}

/** A private key file holds a private JWK (JSON) or a PKCS#8 PEM (SPEC section 2). */
function keyProblem(file: string, usable?: (text: string) => void): string | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    if (code === 'ENOENT') return `cannot read ${file} (${code}); create one with \`mission-gateway keygen ${file}\``;
    // It exists: keygen writes keys 0600, readable by their owner alone (a bind mount into a container keeps the host's owner).
    const uid = process.getuid?.();
    return `cannot read ${file} (${code})${code === 'EACCES' && uid !== undefined ? `: the gateway runs as uid ${uid}, which may not read it; make that user the file's owner (keygen writes it 0600)` : ''}`;
  }
  try {
    const trimmed = text.trim();
    const key = trimmed.startsWith('{') ? createPrivateKey({ key: JSON.parse(trimmed) as never, format: 'jwk' }) : createPrivateKey(trimmed);
    if (key.type !== 'private') return `${file} does not hold a private key`;
  } catch {
    return `${file} is not a private JWK or a PKCS#8 PEM`;
  }
  try {
    usable?.(text);
  } catch (err) {
    return `${file}: ${(err as Error).message}`;
  }
  return null;
}

/** Problems with the key files a config names (checked by `check` and at start). */
export function keyFileProblems(needs: MachineNeeds): string[] {
  const out: string[] = [];
  // The Status client's key as the client signs with it: a key type or JWK `alg` it cannot sign
  // with would start a gateway that refuses every Mission-bound request (r20b 2).
  const files: [string, string | undefined, ((text: string) => void) | undefined][] = [
    ['mission.client.private_key_file', needs.clientKey, parseClientKey],
    ['evidence.sign.private_key_file', needs.signKey, undefined],
  ];
  for (const [path, file, usable] of files) {
    if (file === undefined) continue;
    const problem = keyProblem(file, usable);
    if (problem !== null) out.push(`${path}: ${problem}`);
  }
  return out;
}
