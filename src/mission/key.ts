/**
 * The identity of a Mission inside the gateway: its issuer and id, or for an AAuth reference its
 * approver and `s256`. The Mission state cache (state.ts) and the open exchanges a Mission holds
 * (holds.ts) are keyed by it, so a lifecycle change finds both.
 */
import type { MissionReference } from '../pipeline/context.js';

/**
 * Each form carries its tag, so no id can name an AAuth record: an id reference (from a header,
 * another client's) reading `s256:<hash>` must not find, or poison, the record of the AAuth
 * reference with that hash.
 */
export function recordKey(issuer: string, idOrS256: string, aauth: boolean): string {
  return aauth ? `${issuer}\ns256:${idOrS256}` : `${issuer}\nid:${idOrS256}`;
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
