/**
 * `mission.max_stale_s` is a duration from the Status query's start, kept on the monotonic clock:
 * a wall clock stepped back (NTP) does not stretch how long a cached state is trusted (r21j 4).
 * The absolute bounds (fresh_until, expires_at, the token's exp) stay on the wall clock.
 */
import { afterEach, expect, it } from 'vitest';
import { MissionHolds } from '../../src/mission/holds.js';
import { MissionStates } from '../../src/mission/state.js';
import type { MissionReference } from '../../src/pipeline/context.js';
import { CLIENT_ID, clientKeyFile, LocalKeys, logger, makeConfig, MISSION_ID, newMetrics, RecordingBus, RESOURCE, signingKey, StatusServer } from './helpers.js';

const REF: MissionReference = { form: 'claim', issuer: 'https://as.example.com', id: MISSION_ID, s256: null, authorityHash: null };

let server: StatusServer | undefined;
let states: MissionStates | undefined;
afterEach(async () => {
  await states?.close();
  await server?.close();
});

it('a cached state is asked for again max_stale_s after its query, even when the wall clock was stepped back meanwhile (r21j 4)', async () => {
  let wall = Date.now() + 20_000; // 20 s fast, then stepped back
  const now = (): number => wall;
  const ck = clientKeyFile();
  const authKey = signingKey();
  const issuer = REF.issuer;
  server = await new StatusServer(issuer, authKey, ck.publicKey, now).start();
  server.missions.set(MISSION_ID, { state: 'active', version: 1, fresh_until: null });
  const config = makeConfig({}, { client: { client_id: CLIENT_ID, private_key_file: ck.file }, authorities: [{ issuer, status_endpoint: server.url }], max_stale_s: 1 });
  states = new MissionStates({ config, keys: new LocalKeys().add(issuer, authKey), metrics: newMetrics(), logger, bus: new RecordingBus(), holds: new MissionHolds({ logger, counted: () => {}, now }), now });
  expect(await states.lookup(REF, RESOURCE)).toMatchObject({ state: 'active', source: 'fresh' });
  expect(states.lookup(REF, RESOURCE)).toMatchObject({ source: 'cached' });
  wall -= 20_000; // NTP steps the clock back: by the wall clock, the entry is 20 s younger
  server.missions.set(MISSION_ID, { state: 'revoked', version: 2, fresh_until: null });
  await new Promise((r) => setTimeout(r, 1100));
  const again = await states.lookup(REF, RESOURCE);
  expect(again).toMatchObject({ state: 'revoked', source: 'fresh' });
  expect(server.requests).toHaveLength(2);
});
