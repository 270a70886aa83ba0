import { describe, expect, it } from 'vitest';
import { parseRedisUrl, RedisUrlError } from '../../src/cluster/redis-url.js';

describe('SPEC §2 replay_store.url: Redis URL forms', () => {
  it('redis:// maps to one server, default port 6379, with credentials and db', () => {
    expect(parseRedisUrl('redis://127.0.0.1')).toEqual({ kind: 'standalone', options: { host: '127.0.0.1', port: 6379 } });
    expect(parseRedisUrl('redis://gw:p%40ss%2Fw@redis.internal:6380/2')).toEqual({
      kind: 'standalone',
      options: { host: 'redis.internal', port: 6380, username: 'gw', password: 'p@ss/w', db: 2 },
    });
    expect(parseRedisUrl('redis://:secret@[::1]:7000')).toEqual({ kind: 'standalone', options: { host: '::1', port: 7000, password: 'secret' } });
  });

  it('rediss:// turns TLS on with the host as SNI name', () => {
    const t = parseRedisUrl('rediss://cache.example.com:6380');
    expect(t).toEqual({ kind: 'standalone', options: { host: 'cache.example.com', port: 6380, tls: { servername: 'cache.example.com' } } });
  });

  it('redis+sentinel:// lists Sentinels (default port 26379) and names the master', () => {
    const t = parseRedisUrl('redis+sentinel://:pw@s1:26380,s2,[fd00::1]:26381/mymaster/1?sentinel_password=sp');
    expect(t).toEqual({
      kind: 'sentinel',
      options: {
        sentinels: [
          { host: 's1', port: 26380 },
          { host: 's2', port: 26379 },
          { host: 'fd00::1', port: 26381 },
        ],
        name: 'mymaster',
        password: 'pw',
        db: 1,
        sentinelPassword: 'sp',
      },
    });
    const tls = parseRedisUrl('rediss+sentinel://s1/m');
    expect(tls.kind).toBe('sentinel');
    expect(tls.kind === 'sentinel' && tls.options.enableTLSForSentinelMode).toBe(true);
  });

  it('redis+cluster:// lists seed nodes and carries credentials to every node', () => {
    expect(parseRedisUrl('redis+cluster://u:p@n1:7000,n2:7001,n3')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 7001 },
        { host: 'n3', port: 6379 },
      ],
      options: { redisOptions: { username: 'u', password: 'p' } },
    });
    const tls = parseRedisUrl('rediss+cluster://n1:7000/');
    expect(tls.kind === 'cluster' && tls.options.redisOptions?.tls).toEqual({});
  });

  it.each([
    ['http://x', 'must start with'],
    ['redis://a,b', 'takes one host'],
    ['redis://h:0', 'port must be 1-65535'],
    ['redis://h:abc', 'port must be a number'],
    ['redis://h/db', 'database must be a number'],
    ['redis+sentinel://s1,s2', 'master name'],
    ['redis+cluster://n1/3', 'no database path'],
    ['redis://h?sentinel_password=x', 'unsupported query parameter'],
    ['redis://h#f', 'fragment'],
    ['redis://[::1', 'IPv6'],
  ])('rejects %s', (url, message) => {
    expect(() => parseRedisUrl(url)).toThrow(RedisUrlError);
    expect(() => parseRedisUrl(url)).toThrow(message);
  });

  it('never repeats a password in an error, one with a raw "?" (read as a query) included', () => {
    for (const url of ['redis://user:hunter2-secret@h:99999', 'redis://:pa?hunter2-secret@h:6379', 'redis://:pa?hunter2=secret@h:6379', 'redis+sentinel://:p?hunter2@s1/m']) {
      try {
        parseRedisUrl(url);
        expect.unreachable();
      } catch (err) {
        expect(String((err as Error).message)).not.toMatch(/hunter2|secret/);
      }
    }
  });
});
