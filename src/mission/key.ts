/**
 * The identity of a Mission inside the gateway: its issuer and id, or for an AAuth reference its
 * approver and `s256`. The Mission state cache (state.ts) and the open exchanges a Mission holds
 * (holds.ts) are keyed by it, so a lifecycle change finds both. Also what the reference, state and
 * event readers share about a reference (its bounds, its form, the issuers trusted to govern
 * one), so that no stage imports another (STYLE).
 */
import type { Config } from '../config/schema.js';
import type { MissionReference, MissionReferenceForm } from '../pipeline/context.js';

/** Bounds from the Mission-Reference field definition; applied to every form so cache keys stay small. */
export const MAX_ID_LENGTH = 256;
export const MAX_ISSUER_LENGTH = 512;

/** A Mission id (or another identifier that becomes a key): 1 to MAX_ID_LENGTH characters. */
export const validId = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= MAX_ID_LENGTH;

const HEADER_FORMS: ReadonlySet<MissionReferenceForm> = new Set(['aauth_header', 'reference_header', 'mcp_meta']);

/** True when the reference came from a header or `_meta` (MAS mode), not from the token. */
export function isHeaderReference(ref: MissionReference): boolean {
  return HEADER_FORMS.has(ref.form);
}

/** Issuers whose Missions this gateway may ask about: token issuers, Mission authorities, ID-JAG issuers. */
export function trustedMissionIssuers(config: Config): ReadonlySet<string> {
  return new Set([...config.issuers.map((i) => i.issuer), ...config.mission.authorities.map((a) => a.issuer), ...(config.id_jag?.trusted_issuers ?? [])]);
}

/**
 * Each form carries its tag, so no id can name an AAuth record: an id reference (from a header,
 * another client's) reading `s256:<hash>` must not find, or poison, the record of the AAuth
 * reference with that hash.
 */
export function recordKey(issuer: string, idOrS256: string, aauth: boolean): string {
  return aauth ? `${issuer}\ns256:${idOrS256}` : `${issuer}\nid:${idOrS256}`;
}

/** A lifecycle SET's identity for duplicate suppression: its `jti` is unique per issuer only. */
export function jtiKey(issuer: string, jti: string): string {
  return `${issuer}\n${jti}`;
}

const REF_KEYS = new WeakMap<MissionReference, string>();

/**
 * The key of a reference. Memoized per reference object: a token's reference is one shared
 * object (see tokenReference), so every request looks the cache up with the same string, whose
 * hash V8 has already computed.
 */
export function refKey(ref: MissionReference): string {
  let k = REF_KEYS.get(ref);
  if (k === undefined) {
    k = ref.id !== null ? recordKey(ref.issuer, ref.id, false) : recordKey(ref.issuer, ref.s256 ?? '', true);
    REF_KEYS.set(ref, k);
  }
  return k;
}
