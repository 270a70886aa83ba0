/**
 * The MCP Streamable HTTP handler (SPEC section 7). The pipeline has already authenticated the
 * request (token, DPoP, Mission reference and state: failures there are HTTP 401/403/503); this
 * handler gates what is inside it:
 *
 *   POST body, read once (bounded) and parsed strictly
 *     → per `tools/call`: Mission (token, or `_meta` in MAS mode) → tool binding → authority over
 *       `arguments` → evidence; a denied call is answered here and never reaches the upstream
 *     → forward the rest: the original bytes when nothing was removed
 *     → response: `tools/list` answers filtered (JSON or SSE), the gateway's answers merged in
 *   GET (SSE stream), DELETE (session end) and everything else pass through.
 *
 * The upstream is only read into memory when its answer must be changed: a JSON body that carries a
 * tools/list answer or must be merged with the gateway's answers. SSE is rewritten event by event,
 * so progress notifications flow as they come.
 */
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { actionVisible } from '../authority/decide.js';
import { parameterDigest } from '../authority/params.js';
import { authorityHashMismatch, authorizeAction } from '../authority/stage.js';
import type { Config } from '../config/schema.js';
import { Denial, isDenial } from '../errors.js';
import { readBody } from '../http/body.js';
import { clientHeaders, upstreamHeaders } from '../http/headers.js';
import { parseMetaReference, sameMission, trustedMissionIssuers } from '../mission/reference.js';
import { assertMissionActive, assertMissionJoin } from '../mission/state.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { MissionReference, MissionView, RequestContext } from '../pipeline/context.js';
import { writeDenial } from '../pipeline/respond.js';
import type { Handler, Pipeline } from '../pipeline/run.js';
import { denialResult, type DenialResult } from './denial.js';
import { idKey, parseMcpBody, type InvalidCallMessage, type McpBody, type ToolCallMessage } from './jsonrpc.js';
import { compileToolParams, toolParams, type ToolParamMap } from './params.js';
import { messageEvent, SseRewriter } from './sse.js';
import { combinePins, filterListResponse, MissionPins, ObservedTools, type Pins, type Visible } from './tools.js';

/** The part of MissionStates (src/mission/state.ts) this handler uses. */
export interface MissionLookup {
  lookup(ref: MissionReference, audience: string, opts: { fresh?: boolean; tokenExp?: number }): MissionView | Promise<MissionView>;
}

export interface McpHandlerDeps {
  readonly config: Config;
  readonly missionStates: MissionLookup;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

/** Largest upstream JSON answer the gateway will read to filter or merge (fail closed past it). */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** The Mission one message runs under. */
interface Scope {
  readonly ref: MissionReference | null;
  readonly mission: MissionView | null;
}

interface CallState {
  readonly msg: ToolCallMessage | InvalidCallMessage;
  readonly action: string | null;
  readonly args: Record<string, unknown> | null;
  readonly digest: string | null;
  readonly scope: Scope | null;
  readonly denial: Denial | null;
}

interface ListFilter {
  readonly visible: Visible;
  readonly pins: Pins;
}

const NONE: Visible = () => false;

function mediaType(headers: Record<string, string | string[] | undefined>): string {
  const v = headers['content-type'];
  const s = Array.isArray(v) ? (v[0] ?? '') : (v ?? '');
  const semi = s.indexOf(';');
  return (semi === -1 ? s : s.slice(0, semi)).trim().toLowerCase();
}

function setContentLength(headers: string[], length: number): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === 'content-length') {
      headers[i + 1] = String(length);
      return;
    }
  }
  headers.push('content-length', String(length));
}

function dropHeader(headers: string[], name: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.toLowerCase() === name) headers.splice(i, 2);
  }
}

async function readLimited(body: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new Error('upstream answer too large to filter');
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}

export function createMcpHandler(deps: McpHandlerDeps): Handler {
  return new McpHandler(deps);
}

class McpHandler implements Handler {
  private readonly toolActions: ReadonlyMap<string, string>;
  private readonly toolParams: ToolParamMap;
  private readonly configPins: ReadonlyMap<string, string>;
  private readonly observed = new ObservedTools();
  private readonly missionPins: MissionPins;
  private readonly origin: string;
  private readonly audience: string;
  private readonly headerMode: boolean;
  private readonly required: boolean;
  private readonly trusted: ReadonlySet<string>;
  private readonly lookup: MissionLookup;
  private readonly metrics: Metrics;
  private readonly logger: Logger;

  constructor(deps: McpHandlerDeps) {
    const c = deps.config;
    const mcp = c.mcp;
    this.toolActions = new Map(Object.entries(mcp?.tool_actions ?? {}));
    // `tool_params` is read when the config schema carries it (see docs/mcp.md).
    this.toolParams = compileToolParams((mcp as { tool_params?: Record<string, Record<string, string>> } | undefined)?.tool_params);
    this.configPins = new Map(Object.entries(mcp?.tool_digests ?? {}));
    this.origin = new URL(c.public_base_url).origin;
    this.audience = mcp?.resource ?? c.resource;
    this.missionPins = new MissionPins(this.audience, this.origin + (mcp?.path ?? '/'));
    this.headerMode = c.mission.accept_header_references;
    this.required = c.mission.required;
    this.trusted = trustedMissionIssuers(c);
    this.lookup = deps.missionStates;
    this.metrics = deps.metrics;
    this.logger = deps.logger;
  }

  async handle(ctx: RequestContext, pipeline: Pipeline): Promise<void> {
    const policy = pipeline.deps.headers.protected;
    if (ctx.method !== 'POST') {
      // A resumed stream (Last-Event-ID) may replay a tools/list answer: filter it by its shape.
      if (ctx.method === 'GET' && ctx.req.headers['last-event-id'] !== undefined) {
        const f = this.listFilter(ctx, { ref: ctx.missionRef, mission: ctx.mission });
        let recorded = false;
        const record = (): void => {
          if (!recorded) this.recordRequest(ctx, pipeline);
          recorded = true;
        };
        await this.relay(ctx, pipeline, null, [], false, 'shape', f, record);
        record();
        return;
      }
      await pipeline.forward(ctx, { policy, body: 'stream' });
      return;
    }

    const body = await readBody(ctx.req, pipeline.deps.maxBodyBytes);
    ctx.body = body;
    const parsed = parseMcpBody(body);
    if (parsed.calls === 0 && parsed.lists === 0) {
      await pipeline.forward(ctx, { policy, body });
      return;
    }
    await this.gate(ctx, pipeline, body, parsed);
  }

  private async gate(ctx: RequestContext, pipeline: Pipeline, body: Buffer, parsed: McpBody): Promise<void> {
    const memo = new Map<string, MissionView | Promise<MissionView>>();
    const calls: CallState[] = [];
    const lists = new Map<string, ListFilter>();
    for (const m of parsed.messages) {
      if (m.kind === 'other') continue;
      if (m.kind === 'invalid_call') {
        const denial = new Denial('parameter_unparseable', { description: 'the tools/call params are not valid' });
        calls.push({ msg: m, action: m.name === null ? null : this.actionOf(m.name), args: null, digest: null, scope: null, denial });
        continue;
      }
      const resolved = this.resolve(ctx, m.metaRef, memo);
      const scope = resolved instanceof Promise ? await resolved : resolved;
      if (m.kind === 'list') {
        lists.set(idKey(m.id), isDenial(scope) ? { visible: NONE, pins: combinePins(this.configPins) } : this.listFilter(ctx, scope));
        continue;
      }
      const action = this.actionOf(m.name);
      const digest = parameterDigest(m.args);
      const denial = isDenial(scope) ? scope : this.decideCall(ctx, m, action, scope);
      calls.push({ msg: m, action, args: m.args, digest, scope: isDenial(scope) ? null : scope, denial });
    }

    const answers: DenialResult[] = [];
    const permitted: CallState[] = [];
    let denied: Set<number> | null = null;
    for (const c of calls) {
      if (c.denial === null) {
        permitted.push(c);
        continue;
      }
      (denied ??= new Set()).add(c.msg.index);
      answers.push(denialResult(c.msg.id, c.denial, ctx.id));
      this.recordCall(ctx, pipeline, c, 'deny');
    }

    const forwardItems = denied === null ? parsed.items : parsed.items.filter((_, i) => !denied.has(i));
    if (forwardItems.length === 0) {
      this.answer(ctx, pipeline, parsed.batch ? answers : answers[0]);
      return;
    }

    // Identity headers for the upstream: the permitted calls' actions, and their Mission in MAS mode.
    const actions = [...new Set(permitted.map((c) => c.action).filter((a): a is string => a !== null))];
    ctx.action = actions.length === 0 ? null : actions.join(', ');
    if (permitted.length === 1) {
      ctx.params = permitted[0]!.args;
      ctx.parameterDigest = permitted[0]!.digest;
    }
    const first = permitted[0]?.scope;
    if (ctx.mission === null && first !== undefined && first !== null && first.mission !== null) {
      ctx.mission = first.mission;
      ctx.missionRef = first.ref;
    }

    // Nothing removed: the upstream gets the client's bytes. Otherwise the remaining batch elements.
    const forwardBody = denied === null ? body : Buffer.from(JSON.stringify(forwardItems), 'utf8');
    // Permit records carry the upstream status, so they are written once it is known.
    let recorded = false;
    const record = (): void => {
      if (recorded) return;
      recorded = true;
      for (const c of permitted) this.recordCall(ctx, pipeline, c, 'permit');
      if (calls.length === 0) this.recordRequest(ctx, pipeline);
    };
    if (answers.length === 0 && lists.size === 0) {
      await pipeline.forward(ctx, { policy: pipeline.deps.headers.protected, body: forwardBody, record: false });
    } else {
      await this.relay(ctx, pipeline, forwardBody, answers, parsed.batch, lists, null, record);
    }
    record();
  }

  private actionOf(tool: string): string {
    return this.toolActions.get(tool) ?? tool;
  }

  /**
   * The Mission a message runs under. Returns a Denial for problems denied per call (a `_meta`
   * reference that is malformed, conflicts with the token's, names an untrusted issuer or another
   * subject's Mission); throws for Mission state failures, which deny the whole request at the HTTP
   * level as in SPEC section 5.
   */
  private resolve(ctx: RequestContext, metaRef: unknown, memo: Map<string, MissionView | Promise<MissionView>>): Scope | Denial | Promise<Scope | Denial> {
    const base: Scope = { ref: ctx.missionRef, mission: ctx.mission };
    if (metaRef === undefined) {
      if (ctx.missionRef !== null || !this.required) return base;
      return new Denial('mission_claim_missing', { description: 'no Mission reference in the token or the call' });
    }
    const ref = parseMetaReference(metaRef);
    if (ref === 'malformed') return new Denial('mission_reference_malformed', { description: 'the _meta Mission reference is not valid' });
    if (ctx.missionRef !== null) return sameMission(ctx.missionRef, ref) ? base : new Denial('mission_reference_conflict');
    if (!this.headerMode) return this.required ? new Denial('mission_claim_missing') : base;
    if (!this.trusted.has(ref.issuer)) return new Denial('token_invalid', { description: "the Mission's issuer is not trusted" });

    const key = `${ref.issuer}\n${ref.id ?? ''}`;
    let state = memo.get(key);
    if (state === undefined) {
      const opts = ctx.token === null ? {} : { tokenExp: ctx.token.exp };
      ctx.stage = 'mission_state';
      state = this.lookup.lookup(ref, this.audience, opts);
      memo.set(key, state);
    }
    return state instanceof Promise ? state.then((v) => this.admit(ctx, ref, v)) : this.admit(ctx, ref, state);
  }

  /** Active or throw (HTTP-level denial); joined to the token's subject and client or denied per call. */
  private admit(ctx: RequestContext, ref: MissionReference, view: MissionView): Scope | Denial {
    assertMissionActive(view, Date.now());
    try {
      assertMissionJoin(view, ctx.token);
    } catch (err) {
      if (isDenial(err)) return err;
      throw err;
    }
    return { ref, mission: view };
  }

  private tokenEntries(ctx: RequestContext): readonly unknown[] | null {
    const d = ctx.token?.claims['authorization_details'];
    return Array.isArray(d) ? d : null;
  }

  private pinsFor(ctx: RequestContext, scope: Scope): Pins {
    return combinePins(this.configPins, this.missionPins.of(this.tokenEntries(ctx)), this.missionPins.of(scope.mission?.authority ?? null));
  }

  private decideCall(ctx: RequestContext, call: ToolCallMessage, action: string, scope: Scope): Denial | null {
    ctx.stage = 'authority';
    if (this.observed.drifted(call.name, this.pinsFor(ctx, scope)(call.name))) return new Denial('capability_drift');
    try {
      const params = toolParams(this.toolParams, call.name, call.args);
      authorizeAction({ token: ctx.token, mission: scope.mission, missionRef: scope.ref, audience: ctx.audience, path: ctx.path }, this.origin, action, params, call.name);
      return null;
    } catch (err) {
      if (isDenial(err)) return err;
      throw err;
    }
  }

  /** Which tools a tools/list answer may show for this Mission (no Mission state: none). */
  private listFilter(ctx: RequestContext, scope: Scope): ListFilter {
    const pins = this.pinsFor(ctx, scope);
    if (scope.mission === null && (this.required || scope.ref !== null)) return { visible: NONE, pins };
    const details = ctx.token?.claims['authorization_details'];
    if (details !== undefined && !Array.isArray(details)) return { visible: NONE, pins };
    if (authorityHashMismatch({ mission: scope.mission, missionRef: scope.ref }) !== null) return { visible: NONE, pins };
    const input = {
      audience: ctx.audience,
      requestUrl: this.origin + ctx.path,
      tokenEntries: this.tokenEntries(ctx),
      statusEntries: scope.mission?.authority ?? null,
      now: Date.now(),
    };
    return { visible: (name) => actionVisible({ ...input, action: this.actionOf(name), tool: name }), pins };
  }

  private recordCall(ctx: RequestContext, pipeline: Pipeline, c: CallState, decision: 'permit' | 'deny'): void {
    const saved = { action: ctx.action, params: ctx.params, digest: ctx.parameterDigest, mission: ctx.mission, ref: ctx.missionRef, status: ctx.upstreamStatus };
    ctx.action = c.action;
    ctx.params = c.args;
    ctx.parameterDigest = c.digest;
    if (c.scope !== null) {
      ctx.mission = c.scope.mission;
      ctx.missionRef = c.scope.ref;
    }
    if (decision === 'deny') ctx.upstreamStatus = null;
    const reason = c.denial === null ? null : c.denial.spec.reason;
    pipeline.record(ctx, decision, reason, { tool: c.msg.name, call_index: c.msg.index, jsonrpc_id: c.msg.id });
    this.metrics.countDecision(decision, reason);
    ctx.action = saved.action;
    ctx.params = saved.params;
    ctx.parameterDigest = saved.digest;
    ctx.mission = saved.mission;
    ctx.missionRef = saved.ref;
    ctx.upstreamStatus = saved.status;
  }

  /** One permit record for a request that carried no tools/call (tools/list, resumed stream). */
  private recordRequest(ctx: RequestContext, pipeline: Pipeline): void {
    pipeline.record(ctx, 'permit', null);
    this.metrics.countDecision('permit', null);
  }

  /** Answers the client without the upstream (every gated message was denied). */
  private answer(ctx: RequestContext, pipeline: Pipeline, payload: unknown): void {
    const text = JSON.stringify(payload);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(text)),
      'mission-decision': ctx.id,
      'cache-control': 'no-store',
    };
    if (ctx.dpopNonce !== null) headers['dpop-nonce'] = ctx.dpopNonce;
    pipeline.deps.metrics.observeDecision(ctx.kind, (performance.now() - ctx.started) / 1000);
    ctx.res.writeHead(200, headers);
    ctx.res.end(text);
  }

  /**
   * Sends `body` upstream and relays the answer, filtering tools/list answers (by id, or by shape
   * for a resumed GET stream) and adding the gateway's answers for denied calls of a batch.
   */
  private async relay(
    ctx: RequestContext,
    pipeline: Pipeline,
    body: Buffer | null,
    answers: readonly DenialResult[],
    batch: boolean,
    lists: ReadonlyMap<string, ListFilter> | 'shape',
    shapeFilter: ListFilter | null,
    onOutcome: () => void,
  ): Promise<void> {
    const d = pipeline.deps;
    const up = d.upstream;
    const res = ctx.res;
    ctx.stage = 'forward';
    const headers = upstreamHeaders(ctx.req.rawHeaders, ctx.clientIp, d.headers.protected, {
      decisionId: ctx.id,
      mission: ctx.token === null ? [] : pipeline.identityHeaders(ctx),
    });
    if (body !== null) setContentLength(headers, body.length);
    // The answer is read here: ask for it unencoded (a compressed tools/list could not be filtered).
    dropHeader(headers, 'accept-encoding');
    const decided = performance.now();
    d.metrics.observeDecision(ctx.kind, (decided - ctx.started) / 1000);

    const abort = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort(new Error('client closed'));
    };
    res.once('close', onClose);
    try {
      let r;
      try {
        r = await up.pool.request({
          origin: up.origin,
          method: ctx.method as 'POST',
          path: up.basePath + ctx.path + ctx.search,
          headers: ['host', up.host, ...headers],
          body,
          signal: abort.signal,
        });
      } catch (err) {
        if (abort.signal.aborted) {
          ctx.upstreamStatus ??= 499;
          return;
        }
        const code = (err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT' ? 'gateway_timeout' : 'bad_gateway';
        const denial = new Denial(code, { cause: err });
        ctx.upstreamStatus = denial.spec.status;
        onOutcome();
        writeDenial(res, denial, ctx.id, null, null);
        this.logger.warn({ decision_id: ctx.id, err: (err as Error).message }, 'upstream failed');
        return;
      }
      ctx.upstreamStatus = r.statusCode;
      d.metrics.upstreamSeconds.observe((performance.now() - decided) / 1000);
      onOutcome();

      const rawHeaders = r.headers as Record<string, string | string[] | undefined>;
      const out = clientHeaders(rawHeaders);
      if (ctx.dpopNonce !== null) out['dpop-nonce'] = ctx.dpopNonce;
      const type = mediaType(rawHeaders);
      const status = r.statusCode;
      const encoding = rawHeaders['content-encoding'];
      // An encoded answer cannot be looked into: refuse it rather than pass a list unfiltered.
      if (encoding !== undefined && encoding !== 'identity') {
        await r.body.dump().catch(() => {});
        throw new Error('upstream answer is content-encoded');
      }
      const ok = status >= 200 && status < 300;

      const filterOf = (message: unknown): ListFilter | null => {
        if (lists === 'shape') return shapeFilter;
        if (message === null || typeof message !== 'object' || Array.isArray(message)) return null;
        const id = (message as Record<string, unknown>)['id'];
        if (typeof id !== 'string' && typeof id !== 'number') return null;
        return lists.get(idKey(id)) ?? null;
      };
      const rewriteOne = (message: unknown): unknown => {
        const f = filterOf(message);
        return f === null ? undefined : filterListResponse(message, f.visible, f.pins, this.observed);
      };
      // An SSE event may carry a JSON-RPC batch (protocol 2025-03-26).
      const rewrite = (message: unknown): unknown => {
        if (!Array.isArray(message)) return rewriteOne(message);
        let changed = false;
        const next = message.map((m) => {
          const r = rewriteOne(m);
          if (r === undefined) return m;
          changed = true;
          return r;
        });
        return changed ? next : undefined;
      };

      if (ok && answers.length > 0 && (status === 202 || r.headers['content-length'] === '0')) {
        // Everything forwarded was a notification or a response: the answers are the whole reply.
        await r.body.dump();
        this.answer(ctx, pipeline, answers);
        return;
      }
      if (ok && type === 'application/json') {
        await this.relayJson(ctx, r.body, status, out, answers, batch, rewrite, lists !== 'shape' && lists.size > 0);
        return;
      }
      if (ok && type === 'text/event-stream') {
        let pendingLists = lists === 'shape' ? -1 : lists.size;
        const rewriter =
          pendingLists === 0
            ? null
            : new SseRewriter(
                (m) => {
                  const replaced = rewrite(m);
                  for (const x of Array.isArray(m) ? m : [m]) if (pendingLists > 0 && filterOf(x) !== null && isResponse(x)) pendingLists--;
                  return replaced;
                },
                () => pendingLists !== 0,
              );
        delete out['content-length'];
        res.writeHead(status, out);
        res.flushHeaders();
        for (const a of answers) res.write(messageEvent(a));
        await this.pipe(r.body, res, rewriter, abort.signal);
        return;
      }
      // Errors and other media types pass through as they are.
      res.writeHead(status, out);
      res.flushHeaders();
      await this.pipe(r.body, res, null, abort.signal);
    } catch (err) {
      if (!abort.signal.aborted) this.logger.warn({ decision_id: ctx.id, err: (err as Error).message }, 'MCP upstream stream failed');
      if (!res.headersSent) {
        const denial = new Denial('bad_gateway', { cause: err });
        ctx.upstreamStatus = denial.spec.status;
        writeDenial(res, denial, ctx.id, null, null);
      } else {
        res.destroy();
      }
    } finally {
      res.off('close', onClose);
    }
  }

  private async relayJson(
    ctx: RequestContext,
    upstreamBody: Readable,
    status: number,
    out: Record<string, string | string[]>,
    answers: readonly DenialResult[],
    batch: boolean,
    rewrite: (m: unknown) => unknown,
    mustFilter: boolean,
  ): Promise<void> {
    const res = ctx.res;
    const bytes = await readLimited(upstreamBody, MAX_RESPONSE_BYTES);
    let doc: unknown;
    try {
      doc = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      // An answer we must filter but cannot read is not shown (fail closed); otherwise relay it.
      if (mustFilter) throw err;
      res.writeHead(status, out);
      res.end(bytes);
      return;
    }
    const messages = Array.isArray(doc) ? (doc as unknown[]) : [doc];
    let changed = false;
    const next = messages.map((m) => {
      const r = rewrite(m);
      if (r === undefined) return m;
      changed = true;
      return r;
    });
    if (!changed && answers.length === 0) {
      res.writeHead(status, out);
      res.end(bytes);
      return;
    }
    const payload = answers.length > 0 || batch ? [...answers, ...next] : Array.isArray(doc) ? next : next[0];
    const text = JSON.stringify(payload);
    out['content-length'] = String(Buffer.byteLength(text));
    res.writeHead(status, out);
    res.end(text);
  }

  /** Streams the upstream body to the client with backpressure, through the rewriter when given. */
  private async pipe(body: Readable, res: RequestContext['res'], rewriter: SseRewriter | null, signal: AbortSignal): Promise<void> {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      const outBytes = rewriter === null ? chunk : rewriter.push(chunk);
      if (outBytes.length > 0 && !res.write(outBytes)) await once(res, 'drain', { signal });
    }
    const rest = rewriter?.flush() ?? null;
    if (rest !== null) res.write(rest);
    res.end();
  }
}

function isResponse(m: unknown): boolean {
  return m !== null && typeof m === 'object' && !Array.isArray(m) && ('result' in m || 'error' in m);
}
