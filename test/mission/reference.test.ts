import { describe, expect, it } from 'vitest';
import { createMissionReferenceStage, parseAauthMission, parseMetaReference, parseMissionReference, sameMission } from '../../src/mission/reference.js';
import { recordKey, refKey } from '../../src/mission/key.js';
import type { MissionReference } from '../../src/pipeline/context.js';
import { context, denialOf, ISSUER, makeConfig, MISSION_ID, S256, token } from './helpers.js';

const MAS = 'https://mas.example.com';
const stageFor = (mission: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) =>
  createMissionReferenceStage({ config: makeConfig(extra, { authorities: [{ issuer: MAS }], ...mission }) });

function run(stage: ReturnType<typeof stageFor>, opts: Parameters<typeof context>[0]) {
  const ctx = context(opts);
  return { ctx, denial: denialOf(() => stage(ctx)) };
}

describe('SPEC section 3: token reference forms', () => {
  const stage = stageFor();

  it('reads mission: {id, issuer, authority_hash} (drafts, canonical)', async () => {
    const { ctx, denial } = run(stage, { token: token({ mission: { id: MISSION_ID, issuer: ISSUER, authority_hash: 'sha-256:abc' } }) });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toEqual({ form: 'claim', issuer: ISSUER, id: MISSION_ID, s256: null, authorityHash: 'sha-256:abc' });
  });

  it('reads mission: {id, origin} (seed 002): issuer = origin', async () => {
    const { ctx, denial } = run(stage, { token: token({ mission: { id: 'pm_1', origin: MAS } }) });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toMatchObject({ form: 'claim_origin', issuer: MAS, id: 'pm_1' });
  });

  it('reads mission_ref (seed 000): issuer = token iss', async () => {
    const { ctx, denial } = run(stage, { token: token({ mission_ref: 'mr_7M9Qx2' }) });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toMatchObject({ form: 'mission_ref', issuer: ISSUER, id: 'mr_7M9Qx2' });
  });

  it('reads mission: {approver, s256} (AAuth -01)', async () => {
    const { ctx, denial } = run(stage, { token: token({ mission: { approver: MAS, s256: S256 } }) });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toMatchObject({ form: 'aauth_claim', issuer: MAS, id: null, s256: S256 });
  });

  it('reads a flat mission_s256 (AAuth HEAD): approver = token iss', async () => {
    const { ctx, denial } = run(stage, { token: token({ mission_s256: S256 }) });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toMatchObject({ form: 'aauth_claim', issuer: ISSUER, s256: S256 });
  });

  it('the mission claim is read before mission_ref', async () => {
    const { ctx } = run(stage, { token: token({ mission: { id: MISSION_ID, issuer: ISSUER }, mission_ref: 'mr_other' }) });
    expect(ctx.missionRef?.id).toBe(MISSION_ID);
  });

  it.each([
    ['a string mission claim', { mission: 'msn_1' }],
    ['a mission claim of no known form', { mission: { name: 'x' } }],
    ['a non-string id', { mission: { id: 5, issuer: ISSUER } }],
    ['an id longer than 256 characters', { mission: { id: 'm'.repeat(257), issuer: ISSUER } }],
    ['an s256 that is not a SHA-256 digest', { mission: { approver: MAS, s256: 'short' } }],
    ['a non-string mission_ref', { mission_ref: 7 }],
  ])('a token with %s is token_invalid', async (_name, claims) => {
    expect((await run(stage, { token: token(claims) }).denial)?.code).toBe('token_invalid');
  });

  it('a Mission whose issuer is not trusted makes the token invalid_token (token_invalid)', async () => {
    const d = await run(stage, { token: token({ mission: { id: MISSION_ID, issuer: 'https://evil.example.com' } }) }).denial;
    expect(d?.code).toBe('token_invalid');
    expect(d?.spec.status).toBe(401);
  });

  it('an id_jag.trusted_issuers entry is a trusted Mission issuer', async () => {
    const s = stageFor({}, { id_jag: { token_path: '/oauth2/token', trusted_issuers: ['https://idp.example.com'] } });
    const { ctx, denial } = run(s, { token: token({ mission: { id: MISSION_ID, issuer: 'https://idp.example.com' } }) });
    expect(await denial).toBeNull();
    expect(ctx.missionRef?.issuer).toBe('https://idp.example.com');
  });
});

describe('SPEC section 3: a token without a reference', () => {
  it('is mission_claim_missing (401 invalid_token) while mission.required', async () => {
    const d = await run(stageFor(), { token: token() }).denial;
    expect(d?.code).toBe('mission_claim_missing');
    expect(d?.spec.status).toBe(401);
  });

  it('passes with missionRef null in migration mode (mission.required: false)', async () => {
    const { ctx, denial } = run(stageFor({ required: false }), { token: token() });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toBeNull();
  });

  it('ignores a reference header without MAS mode: mission_claim_missing when required', async () => {
    const d = await run(stageFor(), { token: token(), headers: [['Mission-Reference', `id="${MISSION_ID}", issuer="${MAS}"`]] }).denial;
    expect(d?.code).toBe('mission_claim_missing');
  });

  it('ignores a reference header without MAS mode in migration mode', async () => {
    const { ctx, denial } = run(stageFor({ required: false }), { token: token(), headers: [['Mission-Reference', `id="${MISSION_ID}", issuer="${MAS}"`]] });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toBeNull();
  });

  it('MAS mode (accept_header_references): Mission-Reference names the Mission', async () => {
    const { ctx, denial } = run(stageFor({ accept_header_references: true }), { token: token(), headers: [['Mission-Reference', `id="${MISSION_ID}", issuer="${MAS}"`]] });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toEqual({ form: 'reference_header', issuer: MAS, id: MISSION_ID, s256: null, authorityHash: null });
  });

  it('MAS mode: AAuth-Mission names the Mission', async () => {
    const { ctx, denial } = run(stageFor({ accept_header_references: true }), { token: token(), headers: [['AAuth-Mission', `approver="${MAS}"; s256="${S256}"`]] });
    expect(await denial).toBeNull();
    expect(ctx.missionRef).toMatchObject({ form: 'aauth_header', issuer: MAS, s256: S256 });
  });

  it('MAS mode: both headers naming different forms is a conflict', async () => {
    const d = await run(stageFor({ accept_header_references: true }), {
      token: token(),
      headers: [
        ['AAuth-Mission', `approver="${MAS}"; s256="${S256}"`],
        ['Mission-Reference', `id="${MISSION_ID}", issuer="${MAS}"`],
      ],
    }).denial;
    expect(d?.code).toBe('mission_reference_conflict');
  });

  it('MAS mode: a header Mission at an untrusted issuer is token_invalid', async () => {
    const d = await run(stageFor({ accept_header_references: true }), { token: token(), headers: [['Mission-Reference', `id="${MISSION_ID}", issuer="https://evil.example.com"`]] }).denial;
    expect(d?.code).toBe('token_invalid');
  });
});

describe('SPEC section 3: header references must repeat the token reference', () => {
  const stage = stageFor();
  const claim = { mission: { id: MISSION_ID, issuer: ISSUER } };

  it('Mission-Reference naming the same Mission passes', async () => {
    expect(await run(stage, { token: token(claim), headers: [['Mission-Reference', `id="${MISSION_ID}", issuer="${ISSUER}"`]] }).denial).toBeNull();
  });

  it('Mission-Reference with another id is mission_reference_conflict (403)', async () => {
    const d = await run(stage, { token: token(claim), headers: [['Mission-Reference', `id="msn_other", issuer="${ISSUER}"`]] }).denial;
    expect(d?.code).toBe('mission_reference_conflict');
    expect(d?.spec.status).toBe(403);
  });

  it('Mission-Reference with another issuer is a conflict', async () => {
    expect((await run(stage, { token: token(claim), headers: [['Mission-Reference', `id="${MISSION_ID}", issuer="${MAS}"`]] }).denial)?.code).toBe('mission_reference_conflict');
  });

  it('an AAuth-Mission header against an id claim is a conflict (not the same form)', async () => {
    expect((await run(stage, { token: token(claim), headers: [['AAuth-Mission', `approver="${ISSUER}"; s256="${S256}"`]] }).denial)?.code).toBe('mission_reference_conflict');
  });

  it('AAuth-Mission repeating an AAuth claim passes; another s256 is a conflict', async () => {
    const t = { mission: { approver: MAS, s256: S256 } };
    expect(await run(stage, { token: token(t), headers: [['AAuth-Mission', `approver="${MAS}"; s256="${S256}"`]] }).denial).toBeNull();
    const other = 'A'.repeat(43);
    expect((await run(stage, { token: token(t), headers: [['AAuth-Mission', `approver="${MAS}"; s256="${other}"`]] }).denial)?.code).toBe('mission_reference_conflict');
  });

  it('mission_ref + Mission-Reference at the token issuer is the same Mission', async () => {
    expect(await run(stage, { token: token({ mission_ref: 'mr_7M9Qx2' }), headers: [['Mission-Reference', `id="mr_7M9Qx2", issuer="${ISSUER}"`]] }).denial).toBeNull();
  });
});

describe('RFC 9651: malformed reference headers fail closed (400 mission_reference_malformed)', () => {
  const stage = stageFor({ accept_header_references: true });
  it.each([
    ['Mission-Reference', 'not a dictionary ('],
    ['Mission-Reference', `id=msn_token, issuer="${MAS}"`],
    ['Mission-Reference', `id="${MISSION_ID}"`],
    ['Mission-Reference', `id="${MISSION_ID}", issuer="${MAS}", extra="x"`],
    ['Mission-Reference', `id="${MISSION_ID}";p=1, issuer="${MAS}"`],
    ['Mission-Reference', `id="${'m'.repeat(257)}", issuer="${MAS}"`],
    ['Mission-Reference', `id="${MISSION_ID}", issuer="https://${'a'.repeat(510)}"`],
    ['Mission-Reference', `id=("a" "b"), issuer="${MAS}"`],
    ['AAuth-Mission', `approver="${MAS}"`],
    ['AAuth-Mission', `approver="${MAS}"; s256="${S256}", s256="${S256}"`],
    ['AAuth-Mission', `approver="${MAS}"; s256="not-a-digest"`],
    ['AAuth-Mission', `approver=?1; s256="${S256}"`],
    ['AAuth-Mission', ''],
  ])('%s: %s', async (name, value) => {
    const d = await run(stage, { token: token(), headers: [[name, value]] }).denial;
    expect(d?.code).toBe('mission_reference_malformed');
    expect(d?.spec.status).toBe(400);
  });

  it('a malformed header fails even when the token carries the reference', async () => {
    const d = await run(stageFor(), { token: token({ mission: { id: MISSION_ID, issuer: ISSUER } }), headers: [['Mission-Reference', 'id=']] }).denial;
    expect(d?.code).toBe('mission_reference_malformed');
  });

  it('more than one field line of a reference header is malformed', async () => {
    const v = `id="${MISSION_ID}", issuer="${MAS}"`;
    const d = await run(stage, { token: token(), headers: [['Mission-Reference', v], ['Mission-Reference', v]] }).denial;
    expect(d?.code).toBe('mission_reference_malformed');
  });
});

describe('parsers', () => {
  it('AAuth-Mission: s256 as a parameter of approver (seed 002) or as a dictionary member', () => {
    const a = parseAauthMission(`approver="https://ps.example"; s256="${S256}"`);
    const b = parseAauthMission(`approver="https://ps.example", s256="${S256}"`);
    expect(a).toMatchObject({ issuer: 'https://ps.example', s256: S256 });
    expect(b).toEqual(a);
  });

  it('Mission-Reference: the draft example parses', () => {
    expect(parseMissionReference('id="msn_8RfX2Lqv9TqMv4z7sA2bN1k0YpEdHc9-", issuer="https://mas.example.com"')).toMatchObject({ id: 'msn_8RfX2Lqv9TqMv4z7sA2bN1k0YpEdHc9-', issuer: 'https://mas.example.com' });
  });

  it('a repeated member or parameter key is malformed, not the last one read (RFC 9651 collapses them; the drafts refuse them first, r14b 4)', () => {
    const id = 'msn_8RfX2Lqv9TqMv4z7sA2bN1k0YpEdHc9-';
    for (const bad of [
      `id="msn_someone_else", issuer="${MAS}", id="${id}"`,
      `id="${id}", issuer="https://mas.evil.example", issuer="${MAS}"`,
      `id="${id}",issuer="${MAS}",id="${id}"`,
    ]) {
      expect(parseMissionReference(bad)).toBe('malformed');
    }
    // Keys inside String values are not keys.
    expect(parseMissionReference(`id="${id}", issuer="https://mas.example/?id=x,id=y;id"`)).toMatchObject({ id });
    expect(parseAauthMission(`approver="https://ps.example", s256="${S256}", approver="https://evil.example"`)).toBe('malformed');
    expect(parseAauthMission(`approver="https://ps.example"; s256="${S256}"; s256="${S256}"`)).toBe('malformed');
    expect(parseAauthMission(`approver="https://ps.example";s256="${S256}"`)).toMatchObject({ s256: S256 });
  });

  it('parseMetaReference: {mission_id, issuer}; anything else is malformed', () => {
    expect(parseMetaReference({ mission_id: MISSION_ID, issuer: MAS })).toEqual({ form: 'mcp_meta', issuer: MAS, id: MISSION_ID, s256: null, authorityHash: null });
    for (const bad of [null, 'x', [], { mission_id: MISSION_ID }, { mission_id: 1, issuer: MAS }, { mission_id: 'm'.repeat(257), issuer: MAS }, { mission_id: MISSION_ID, issuer: MAS, id: 'msn_someone_else' }]) {
      expect(parseMetaReference(bad)).toBe('malformed');
    }
  });

  it('sameMission: same id and issuer; AAuth refs by (approver, s256); never across forms', () => {
    const id = (issuer: string, i: string): MissionReference => ({ form: 'claim', issuer, id: i, s256: null, authorityHash: null });
    const aa = (issuer: string, s: string): MissionReference => ({ form: 'aauth_claim', issuer, id: null, s256: s, authorityHash: null });
    expect(sameMission(id(ISSUER, 'a'), { ...id(ISSUER, 'a'), form: 'mcp_meta' })).toBe(true);
    expect(sameMission(id(ISSUER, 'a'), id(ISSUER, 'b'))).toBe(false);
    expect(sameMission(id(ISSUER, 'a'), id(MAS, 'a'))).toBe(false);
    expect(sameMission(aa(MAS, S256), aa(MAS, S256))).toBe(true);
    expect(sameMission(aa(MAS, S256), id(MAS, S256))).toBe(false);
  });
});

describe('the key a reference is cached and held under (key.ts)', () => {
  it('an id reference reading "s256:<hash>" never shares the key of the AAuth reference with that hash', () => {
    const aauth: MissionReference = { form: 'aauth_claim', issuer: ISSUER, id: null, s256: S256, authorityHash: null };
    const lookalike: MissionReference = { form: 'reference_header', issuer: ISSUER, id: `s256:${S256}`, s256: null, authorityHash: null };
    expect(refKey(lookalike)).not.toBe(refKey(aauth));
    expect(recordKey(ISSUER, `s256:${S256}`, false)).not.toBe(recordKey(ISSUER, S256, true));
    // The same Mission by id, however the reference was written, is one key.
    const byClaim: MissionReference = { form: 'claim', issuer: ISSUER, id: MISSION_ID, s256: null, authorityHash: null };
    expect(refKey(byClaim)).toBe(recordKey(ISSUER, MISSION_ID, false));
  });
});
