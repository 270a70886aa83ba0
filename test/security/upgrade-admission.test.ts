/**
 * A client that goes away while its WebSocket upgrade is being decided (here: the gateway's first
 * request under the token, which fetches the issuer's keys and asks Mission Status) gets no tunnel:
 * nothing is opened to the upstream, no place under upstream.websocket_tunnels stays taken, and the
 * record says 499 (r19f 2). Real sockets, the development authority.
 */
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { API, startTarget, type Target } from './fixture.js';

const targets: Target[] = [];
afterEach(async () => {
  for (const t of targets.splice(0)) await t.close();
});

describe('an upgrade whose client left while it was decided', () => {
  it('opens nothing upstream and is recorded 499', async () => {
    const t = await startTarget();
    targets.push(t);
    const dpop = await t.agent.proof('GET', `${API}/reports/live`, t.token);
    const socket = connect(Number(new URL(t.gw.url).port), '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(
      `GET /reports/live HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: DPoP ${t.token}\r\nDPoP: ${dpop}\r\n` +
        'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    socket.resetAndDestroy(); // gone at once: the keys and the Mission's state are still being fetched
    await eventually(() => t.gw.evidence().some((r) => r['path'] === '/reports/live'), 5000);
    expect(t.gw.evidence().find((r) => r['path'] === '/reports/live')).toMatchObject({ decision: 'permit', upstream_status: 499 });
    await new Promise((r) => setTimeout(r, 200));
    expect(t.echo.requests.filter((q) => q.url === '/reports/live')).toHaveLength(0);
  });
});
