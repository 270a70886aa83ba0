/** Requests to a running dev authority's admin API (`<authority>/admin/...`), as the CLI verbs make them. */
export function adminFetch(authority: string, path: string, adminToken: string | undefined, body?: Record<string, unknown>): Promise<Response> {
  return fetch(`${authority.replace(/\/$/, '')}/admin${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(adminToken === undefined ? {} : { authorization: `Bearer ${adminToken}` }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}
