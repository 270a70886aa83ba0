/**
 * The mission_reference stage (SPEC section 3): which Mission a request runs under.
 *
 * The token's claim is authoritative. Reference headers (`AAuth-Mission`, `Mission-Reference`) are
 * parsed as RFC 9651 structured fields and, when the token carries a reference, may only repeat it
 * (same Mission, same form) or the request is a `mission_reference_conflict`. A token without a
 * reference may be given one by a header only in MAS mode (`mission.accept_header_references`);
 * the state stage then joins the Mission's subject and client to the token's (see state.ts).
 * A header that does not parse, or is sent more than once, fails closed.
 */
import { parseDictionary, type BareItem, type Dictionary } from 'structured-headers';
import type { Config } from '../config/schema.js';
import { Denial } from '../errors.js';
import { rawHeaderLines } from '../http/headers.js';
import type { AccessToken, MissionReference, MissionReferenceForm, RequestContext, Stage } from '../pipeline/context.js';
import { MAX_ISSUER_LENGTH, trustedMissionIssuers, validId } from './key.js';

/** AAuth `s256`: base64url (no padding) of a SHA-256 digest. */
const S256 = /^[A-Za-z0-9_-]{43}$/;

export const MCP_META_KEY = 'com.karlmcguinness.mission/reference';

/** Same Mission in the same form: an id reference never equals an AAuth (approver, s256) one. */
export function sameMission(a: MissionReference, b: MissionReference): boolean {
  if (a.issuer !== b.issuer) return false;
  if (a.s256 !== null || b.s256 !== null) return a.s256 === b.s256 && a.id === null && b.id === null;
  return a.id === b.id;
}

const validIssuer = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= MAX_ISSUER_LENGTH;

function ref(form: MissionReferenceForm, issuer: string, id: string | null, s256: string | null, authorityHash: string | null = null): MissionReference {
  return { form, issuer, id, s256, authorityHash };
}

/** MCP `params._meta["com.karlmcguinness.mission/reference"]`: `{mission_id, issuer}`. */
export function parseMetaReference(value: unknown): MissionReference | 'malformed' {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'malformed';
  const v = value as Record<string, unknown>;
  // Exactly the two members (mission-authority-server "MCP Carriage": any other is malformed).
  if (Object.keys(v).length !== 2 || !validId(v['mission_id']) || !validIssuer(v['issuer'])) return 'malformed';
  return ref('mcp_meta', v['issuer'], v['mission_id'], null);
}

const TOKEN_REFERENCES = new WeakMap<AccessToken, MissionReference | null | 'malformed'>();

/**
 * The Mission reference a token carries (claim forms of SPEC section 3), or null, or 'malformed'.
 * Memoized per token object: a verified token is one frozen object shared by every request that
 * presents it, so its reference is read once and is the same (frozen) object each time.
 */
export function tokenReference(token: AccessToken): MissionReference | null | 'malformed' {
  let r = TOKEN_REFERENCES.get(token);
  if (r === undefined) {
    r = readTokenReference(token);
    if (r !== null && r !== 'malformed') Object.freeze(r);
    TOKEN_REFERENCES.set(token, r);
  }
  return r;
}

/**
 * The token's own reference, in the order of SPEC section 3's table. Returns null when the token
 * carries none, 'malformed' when it carries a claim that is not one of the forms.
 */
function readTokenReference(token: AccessToken): MissionReference | null | 'malformed' {
  const claims = token.claims;
  const mission = claims['mission'];
  if (mission !== undefined) {
    if (mission === null || typeof mission !== 'object' || Array.isArray(mission)) return 'malformed';
    const m = mission as Record<string, unknown>;
    if (m['id'] !== undefined && m['issuer'] !== undefined) {
      if (!validId(m['id']) || !validIssuer(m['issuer'])) return 'malformed';
      const hash = m['authority_hash'];
      if (hash !== undefined && typeof hash !== 'string') return 'malformed';
      return ref('claim', m['issuer'], m['id'], null, hash ?? null);
    }
    if (m['id'] !== undefined && m['origin'] !== undefined) {
      if (!validId(m['id']) || !validIssuer(m['origin'])) return 'malformed';
      return ref('claim_origin', m['origin'], m['id'], null);
    }
    if (m['approver'] !== undefined && m['s256'] !== undefined) {
      if (!validIssuer(m['approver']) || typeof m['s256'] !== 'string' || !S256.test(m['s256'])) return 'malformed';
      return ref('aauth_claim', m['approver'], null, m['s256']);
    }
    return 'malformed';
  }
  const missionRef = claims['mission_ref'];
  if (missionRef !== undefined) {
    if (!validId(missionRef) || !validIssuer(token.issuer)) return 'malformed';
    return ref('mission_ref', token.issuer, missionRef, null);
  }
  const flat = claims['mission_s256'];
  if (flat !== undefined) {
    if (typeof flat !== 'string' || !S256.test(flat) || !validIssuer(token.issuer)) return 'malformed';
    return ref('aauth_claim', token.issuer, null, flat);
  }
  return null;
}

function stringItem(member: unknown): { value: string; params: Map<string, BareItem> } | null {
  // A Dictionary member is [bareItem, params] for an Item, [items[], params] for an Inner List.
  if (!Array.isArray(member)) return null;
  const [value, params] = member as [unknown, Map<string, BareItem>];
  return typeof value === 'string' ? { value, params } : null;
}

/**
 * The Dictionary, or null when it does not parse or repeats a key. RFC 9651 keeps the last of
 * duplicate member keys (and parameter keys), so `id="a", id="b"` parses to one member; another
 * reader in the path may take the first. The Mission-Bound drafts ("HTTP Carriage") require
 * refusing a duplicate before that collapse.
 */
function parseDict(value: string): Dictionary | null {
  let dict: Dictionary;
  try {
    dict = parseDictionary(value);
  } catch {
    return null;
  }
  return repeatsKey(value) ? null : dict;
}

const SF_KEY = /[a-z*][a-z0-9_\-.*]*/y;

/**
 * True when a field that parsed as a Dictionary names a member twice, or one parameter twice on
 * the same member. Reads only keys: values are skipped (a String or an Inner List may hold `,`
 * and `;`).
 */
export function repeatsKey(value: string): boolean {
  const n = value.length;
  const members = new Set<string>();
  let i = 0;
  const space = (ows: boolean): void => {
    while (i < n && (value[i] === ' ' || (ows && value[i] === '\t'))) i++;
  };
  const key = (seen: Set<string>): boolean => {
    SF_KEY.lastIndex = i;
    const m = SF_KEY.exec(value);
    if (m === null || seen.has(m[0])) return false;
    seen.add(m[0]);
    i = SF_KEY.lastIndex;
    return true;
  };
  const skipString = (): void => {
    for (i++; i < n && value[i] !== '"'; i++) if (value[i] === '\\') i++;
    i++;
  };
  const skipItem = (): void => {
    if (value[i] === '"') return skipString();
    while (i < n && !' \t;,()'.includes(value[i]!)) i++;
  };
  while (i < n) {
    space(true);
    if (!key(members)) return true;
    if (value[i] === '=') {
      i++;
      if (value[i] === '(') {
        for (i++; i < n && value[i] !== ')'; ) {
          if (value[i] === '"') skipString();
          else i++;
        }
        i++;
      } else skipItem();
    }
    const params = new Set<string>();
    for (;;) {
      space(false);
      if (value[i] !== ';') break;
      i++;
      space(false);
      if (!key(params)) return true;
      if (value[i] === '=') {
        i++;
        skipItem();
      }
    }
    space(true);
    if (i < n && value[i] !== ',') return true;
    i++;
  }
  return false;
}

/**
 * `AAuth-Mission: approver="…"; s256="…"` (s256 a parameter of approver, seed 002) or
 * `approver="…", s256="…"` (dictionary members). s256 in both places is ambiguous: malformed.
 */
export function parseAauthMission(value: string): MissionReference | 'malformed' {
  const dict = parseDict(value);
  if (dict === null) return 'malformed';
  const approver = stringItem(dict.get('approver'));
  if (approver === null || !validIssuer(approver.value)) return 'malformed';
  const asParam = approver.params.get('s256');
  const asMember = dict.get('s256');
  if ((asParam === undefined) === (asMember === undefined)) return 'malformed';
  let s256: unknown = asParam;
  if (asMember !== undefined) {
    const item = stringItem(asMember);
    if (item === null || item.params.size > 0) return 'malformed';
    s256 = item.value;
  }
  if (typeof s256 !== 'string' || !S256.test(s256)) return 'malformed';
  return ref('aauth_header', approver.value, null, s256);
}

/** `Mission-Reference: id="msn_…", issuer="…"`: a Dictionary of exactly two Strings, no parameters. */
export function parseMissionReference(value: string): MissionReference | 'malformed' {
  const dict = parseDict(value);
  if (dict === null || dict.size !== 2) return 'malformed';
  const id = stringItem(dict.get('id'));
  const issuer = stringItem(dict.get('issuer'));
  if (id === null || issuer === null || id.params.size > 0 || issuer.params.size > 0) return 'malformed';
  if (!validId(id.value) || !validIssuer(issuer.value)) return 'malformed';
  return ref('reference_header', issuer.value, id.value, null);
}

/** The single field line of `name`, null when absent; more than one line is malformed. */
function singleHeader(ctx: RequestContext, name: string): string | null | 'malformed' {
  const lines = rawHeaderLines(ctx.req.rawHeaders, name);
  if (lines.length === 0) return null;
  return lines.length === 1 ? (lines[0] as string) : 'malformed';
}

function readHeader(ctx: RequestContext, name: string, parse: (v: string) => MissionReference | 'malformed'): MissionReference | null {
  const raw = singleHeader(ctx, name);
  if (raw === null) return null;
  const parsed = raw === 'malformed' ? raw : parse(raw);
  if (parsed === 'malformed') throw new Denial('mission_reference_malformed', { description: `the ${name} header is not a valid Mission reference` });
  return parsed;
}

export function createMissionReferenceStage(deps: { config: Config }): Stage {
  const trusted = trustedMissionIssuers(deps.config);
  const { required, accept_header_references: headerMode } = deps.config.mission;

  return (ctx: RequestContext): void => {
    const token = ctx.token;
    if (token === null) {
      // Unauthenticated routes never reach this stage with a reference to enforce.
      ctx.missionRef = null;
      return;
    }
    // Headers parse first: a malformed one fails closed whatever the token carries.
    const aauth = readHeader(ctx, 'aauth-mission', parseAauthMission);
    const named = readHeader(ctx, 'mission-reference', parseMissionReference);

    const fromToken = tokenReference(token);
    if (fromToken === 'malformed') throw new Denial('token_invalid', { description: 'the access token carries an unrecognized Mission reference' });

    let chosen: MissionReference | null = fromToken;
    if (chosen !== null) {
      for (const h of [aauth, named]) {
        if (h !== null && !sameMission(chosen, h)) throw new Denial('mission_reference_conflict');
      }
    } else if (aauth !== null || named !== null) {
      if (!headerMode) {
        if (required) throw new Denial('mission_claim_missing');
        ctx.missionRef = null;
        return;
      }
      if (aauth !== null && named !== null && !sameMission(aauth, named)) throw new Denial('mission_reference_conflict');
      chosen = named ?? aauth;
    }

    if (chosen === null) {
      // Migration mode (`mission.required: false`): the request runs without Mission enforcement.
      if (required) throw new Denial('mission_claim_missing');
      ctx.missionRef = null;
      return;
    }
    if (!trusted.has(chosen.issuer)) throw new Denial('token_invalid', { description: "the Mission's issuer is not trusted" });
    ctx.missionRef = chosen;
  };
}
