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
 * With nothing to change on the way back the pipeline's streaming forwarder carries the request;
 * otherwise relay.ts does, rewriting only what it must.
 */
import { actionVisible } from '../authority/decide.js';
import { numberSource, stringifyExact } from '../authority/json.js';
import { digestOrNull, jsonBodyContentType, undigestable } from '../authority/params.js';
import { authorityHashMismatch, authorizeAction } from '../authority/stage.js';
import type { Config } from '../config/schema.js';
import { Denial, isDenial } from '../errors.js';
import { hasBody, readBody } from '../http/body.js';
import type { LastWords } from '../http/forward.js';
import { soleField, TWO_FIELDS } from '../http/headers.js';
import type { Review } from '../mission/holds.js';
import { refKey, trustedMissionIssuers } from '../mission/key.js';
import { parseMetaReference, sameMission } from '../mission/reference.js';
import { judgeNamed } from '../mission/state.js';
import type { Logger } from '../observability/logger.js';
import { principalOf, type AccessToken, type MissionReference, type MissionView, type RequestContext } from '../pipeline/context.js';
import type { Handler, Pipeline } from '../pipeline/run.js';
import { denialResult, taskDenialResult, type DenialResult } from './denial.js';
import { CallLastWords } from './last-words.js';
import { idKey, parseMcpBody, type InvalidCallMessage, type JsonRpcId, type McpBody, type ToolCallMessage } from './jsonrpc.js';
import { compileToolParams, toolParams, type ToolParamMap } from './params.js';
import { answerDirectly, relay } from './relay.js';
import { MAX_SESSION_ID_LENGTH, type McpSessions } from './sessions.js';
import { DeniedTasks } from './tasks.js';
import { combinePins, ListAnswers, MissionPins, ObservedTools, type ListFilter, type Pins, type Visible } from './tools.js';

/** The part of MissionStates (src/mission/state.ts) this handler uses. */
export interface MissionLookup {
  lookup(ref: MissionReference, audience: string, opts: { fresh?: boolean; tokenExp?: number; asker?: string }): MissionView | Promise<MissionView>;
  /** Throws mission_reference_conflict unless the Mission belongs to the token's subject and client (state.ts assertMissionJoin). */
  join(view: MissionView, token: AccessToken | null): void;
}

export interface McpHandlerDeps {
  readonly config: Config;
  readonly missionStates: MissionLookup;
  readonly logger: Logger;
  /** Sessions held under their Missions and ended with them (sessions.ts); none: not tracked. */
  readonly sessions?: McpSessions;
}

/** The Mission one message runs under. */
interface Scope {
  readonly ref: MissionReference | null;
  readonly mission: MissionView | null;
}

/** What is kept of a tools/call message once decided: not its parsed arguments. */
type CallHead = Omit<ToolCallMessage, 'args' | 'metaRef'> | InvalidCallMessage;

interface CallState {
  readonly msg: CallHead;
  readonly action: string | null;
  /**
   * The call's arguments, parsed again from the request's body when a review decides it again (an
   * authority change while it runs): the parsed tree, up to ~35 times the body's size, is not kept
   * while the upstream answers, so that a few large calls in flight cannot exhaust the heap (r21j 1).
   */
  readonly args: (parsed: ParsedBodies) => Record<string, unknown> | null;
  readonly digest: string | null;
  readonly scope: Scope | null;
  readonly denial: Denial | null;
}

const NO_ARGS = (): null => null;

/** Bodies parsed again during one review: each at most once, however many of its calls are decided (r21f 2). */
type ParsedBodies = Map<Buffer, McpBody>;

/** What forwarding needs of a decided request (gate). */
interface Decided {
  readonly forwardBody: Buffer;
  readonly answers: DenialResult[];
  readonly permitted: readonly CallState[];
  readonly lists: Map<string, ListFilter>;
  readonly batch: boolean;
  /** Whether the request carried a tools/call (else one record for the request). */
  readonly anyCall: boolean;
}

/** A call's arguments, parsed again from the body it came in. */
function argsAt(body: Buffer, index: number, parsed: ParsedBodies): Record<string, unknown> | null {
  let p = parsed.get(body);
  if (p === undefined) parsed.set(body, (p = parseMcpBody(body)));
  for (const m of p.messages) if (m.kind === 'call' && m.index === index) return m.args;
  return null;
}

function headOf(m: ToolCallMessage): CallHead {
  return { kind: m.kind, index: m.index, id: m.id, name: m.name, task: m.task };
}

/**
 * How a stream answering these calls ends when its Mission cuts it: a tool error for each call
 * (as a call denied before it ran gets), so that a client waiting for the result learns why at
 * once instead of at its own timeout (r21c). Task-augmented calls are answered by their task: none.
 * Calls under different Missions (MAS mode) share a stream one Mission's end cuts: the others'
 * Missions did not end, so no reason is given and the connection is cut.
 */
function lastWordsFor(permitted: readonly CallState[], decisionId: string): LastWords | null {
  const ids: JsonRpcId[] = [];
  let mission: string | null = null;
  for (const c of permitted) {
    if (c.msg.kind !== 'call' || c.msg.task) continue;
    const key = c.scope?.ref == null ? '' : refKey(c.scope.ref);
    if (mission !== null && key !== mission) return null;
    mission = key;
    ids.push(c.msg.id);
  }
  return ids.length === 0 ? null : new CallLastWords(ids, decisionId);
}

const NONE: Visible = () => false;

/** What deciding a call again needs of its request (not the request itself: a review may outlive it). */
interface Asked {
  readonly token: RequestContext['token'];
  readonly audience: string;
  readonly path: string;
  readonly ref: MissionReference | null;
}

const SESSION_ID = /^[\x21-\x7e]+$/;

/**
 * The request's `Mcp-Session-Id`, when it names one. Two fields are refused: the gateway would
 * check them joined ("a, b") while an upstream that reads the first serves that session (r16e F4).
 */
function sessionOf(ctx: RequestContext): string | undefined {
  const value = soleField(ctx.req.rawHeaders, 'mcp-session-id');
  if (value === TWO_FIELDS) throw new Denial('request_malformed', { description: 'more than one Mcp-Session-Id field' });
  if (value === null || value === '') return undefined;
  // MCP: visible ASCII. Bounded: ids are kept per session, and ended ones remembered (r16f F3).
  if (!validSessionId(value)) throw new Denial('request_malformed', { description: `an Mcp-Session-Id must be 1-${MAX_SESSION_ID_LENGTH} visible ASCII characters` });
  return value;
}

function validSessionId(value: string): boolean {
  return value.length <= MAX_SESSION_ID_LENGTH && SESSION_ID.test(value);
}

/**
 * How these calls are decided again (null when there are none). Built here, not inside the
 * request's handling: a closure made there would keep the whole request (its body) alive for as
 * long as a session keeps the review (r16e F2).
 */
function reviewOver(handler: { permitsAgain(asked: Asked, c: CallState, view: MissionView, parsed: ParsedBodies): boolean }, asked: Asked, calls: readonly CallState[]): Review | null {
  if (calls.length === 0) return null;
  return (view) => {
    const parsed: ParsedBodies = new Map();
    return calls.every((c) => handler.permitsAgain(asked, c, view, parsed));
  };
}

export function createMcpHandler(deps: McpHandlerDeps): Handler {
  return new McpHandler(deps);
}

/** The methods the MCP endpoint forwards besides POST, none of which carries a message. */
const BODILESS_METHODS: ReadonlySet<string> = new Set(['GET', 'DELETE', 'HEAD', 'OPTIONS']);

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
  private readonly logger: Logger;
  private readonly sessions: McpSessions | null;
  private readonly deniedTasks = new DeniedTasks();

  constructor(deps: McpHandlerDeps) {
    const c = deps.config;
    const mcp = c.mcp;
    this.toolActions = new Map(Object.entries(mcp?.tool_actions ?? {}));
    this.toolParams = compileToolParams(mcp?.tool_params);
    this.configPins = new Map(Object.entries(mcp?.tool_digests ?? {}));
    this.origin = new URL(c.public_base_url).origin;
    this.audience = mcp?.resource ?? c.resource;
    this.missionPins = new MissionPins(this.audience, this.origin + (mcp?.path ?? '/'));
    this.headerMode = c.mission.accept_header_references;
    this.required = c.mission.required;
    this.trusted = trustedMissionIssuers(c);
    this.lookup = deps.missionStates;
    this.logger = deps.logger;
    this.sessions = deps.sessions ?? null;
  }

  async handle(ctx: RequestContext, pipeline: Pipeline): Promise<void> {
    const policy = pipeline.deps.headers.strip;
    const session = this.sessions === null ? undefined : sessionOf(ctx);
    if (session !== undefined) {
      if (this.sessions!.isEnded(session)) throw new Denial('session_ended');
      const owner = this.sessions!.ownerOf(session);
      if (owner !== undefined && owner !== principalOf(ctx)) throw new Denial('session_mismatch');
    }
    if (ctx.method !== 'POST') {
      // Streamable HTTP sends messages by POST only: GET opens a stream, DELETE ends a session.
      // Messages sent any other way would reach the upstream ungated (a lax server may read them).
      if (!BODILESS_METHODS.has(ctx.method)) throw new Denial('no_route', { description: 'the MCP endpoint takes POST, GET and DELETE' });
      if (hasBody(ctx.req)) throw new Denial('request_malformed', { description: `a ${ctx.method} to the MCP endpoint carries no body` });
      // A resumed stream (Last-Event-ID) may replay a tools/list answer: filter it by its shape.
      if (ctx.method === 'GET' && ctx.req.headers['last-event-id'] !== undefined) {
        const f = this.listFilter(ctx, { ref: ctx.missionRef, mission: ctx.mission });
        let recorded = false;
        const record = (): void => {
          if (!recorded) this.recordRequest(ctx, pipeline);
          recorded = true;
        };
        this.track(ctx, session);
        await relay(ctx, pipeline, { body: null, answers: [], batch: false, lists: new ListAnswers(null, f, this.observed), onOutcome: record }, this.logger);
        record();
        return;
      }
      if (ctx.method !== 'DELETE') this.track(ctx, session);
      await pipeline.forward(ctx, { policy, body: 'stream' });
      // The client ended its session (the DELETE went to the upstream): ended here too, whatever the
      // upstream answered (a server may refuse and keep it, and it would go on unheld).
      if (ctx.method === 'DELETE' && session !== undefined) this.sessions!.closedByClient(session);
      return;
    }

    // Read as UTF-8 whatever the client declares: a charset the upstream honours would not be.
    jsonBodyContentType(ctx.req.rawHeaders);
    const body = await readBody(ctx.req, pipeline.deps.maxBodyBytes);
    ctx.body = body;
    await pipeline.recheckMission(ctx);
    // Parsed and decided in a frame of its own: the parse tree (up to ~35 times the body) is not
    // held by this one while the upstream answers (r21j 1).
    const next = await this.parseAndGate(ctx, pipeline, body, session);
    if (next === 'plain') {
      // Notifications, and the client's answers to the server's requests (a confirmation asked
      // for by a call): they go on while the session does.
      this.track(ctx, session);
      const outcome = await pipeline.forward(ctx, { policy, body });
      // An `initialize` answered with a new session: bound to its creator from now (sessions.ts).
      if (session === undefined && outcome.kind === 'response' && outcome.session !== null && validSessionId(outcome.session)) this.sessions?.created(outcome.session, ctx);
      return;
    }
    if (next !== null) await this.forwardDecided(ctx, pipeline, next);
  }

  /** The body parsed and gated: what to forward, 'plain' (nothing to gate), or null (answered). */
  private async parseAndGate(ctx: RequestContext, pipeline: Pipeline, body: Buffer, session: string | undefined): Promise<Decided | 'plain' | null> {
    const parsed = parseMcpBody(body);
    // A task the gateway made for a denied call: the upstream does not know it.
    const made = parsed.batch ? null : this.deniedTasks.answer(parsed.items[0], principalOf(ctx), Date.now());
    if (made !== null) {
      this.recordRequest(ctx, pipeline);
      answerDirectly(ctx, pipeline, made);
      return null;
    }
    if (parsed.calls === 0 && parsed.lists === 0) return 'plain';
    return this.gate(ctx, pipeline, body, parsed, session);
  }

  /**
   * The gate, in four steps: decide every message, answer the denied calls, hold what goes on
   * under its Missions, and return the rest for forwardDecided to forward. The parsed body is not
   * kept while the upstream answers (its tree can be ~35 times the body: a few large calls in
   * flight would exhaust the heap, r21j 1): what is returned is only what forwarding needs.
   */
  private async gate(ctx: RequestContext, pipeline: Pipeline, body: Buffer, parsed: McpBody, session: string | undefined): Promise<Decided | null> {
    const { calls, lists, listScopes } = await this.decideAll(ctx, parsed, body);
    const { answers, permitted, denied } = this.answerDenied(ctx, pipeline, parsed, calls);

    const forwardItems = denied === null ? parsed.items : parsed.items.filter((_, i) => !denied.has(i));
    if (forwardItems.length === 0) {
      // Nothing forwarded, so no record carries the request's own id: the header names the first
      // denial's (SPEC section 5: Mission-Decision is a record's decision_id).
      answerDirectly(ctx, pipeline, parsed.batch ? answers : answers[0], answers[0]?.result.structuredContent.decision_id ?? ctx.id);
      return null;
    }
    this.holdForwarded(ctx, permitted, listScopes, session);
    // Nothing removed: the upstream gets the client's bytes. Otherwise the remaining batch elements.
    const forwardBody = denied === null ? body : Buffer.from(batchText(parsed.items, denied), 'utf8');
    return { forwardBody, answers, permitted, lists, batch: parsed.batch, anyCall: calls.length > 0 };
  }

  private async forwardDecided(ctx: RequestContext, pipeline: Pipeline, d: Decided): Promise<void> {
    // Permit records carry the upstream status, so they are written once it is known.
    let recorded = false;
    const record = (): void => {
      if (recorded) return;
      recorded = true;
      for (const c of d.permitted) this.recordCall(ctx, pipeline, c, 'permit');
      if (!d.anyCall) this.recordRequest(ctx, pipeline);
    };
    const lastWords = lastWordsFor(d.permitted, ctx.id);
    if (d.answers.length === 0 && d.lists.size === 0) {
      await pipeline.forward(ctx, { policy: pipeline.deps.headers.strip, body: d.forwardBody, record: false, lastWords });
    } else {
      const listAnswers = d.lists.size === 0 ? null : new ListAnswers(d.lists, null, this.observed);
      await relay(ctx, pipeline, { body: d.forwardBody, answers: d.answers, batch: d.batch, lists: listAnswers, onOutcome: record, lastWords }, this.logger);
    }
    record();
  }

  /**
   * Step 1: each tools/call decided (its Mission resolved, its action, parameters and digest), each
   * tools/list given the filter of its Mission. Other messages are not the gate's.
   */
  private async decideAll(ctx: RequestContext, parsed: McpBody, body: Buffer): Promise<{ calls: CallState[]; lists: Map<string, ListFilter>; listScopes: Scope[] }> {
    const memo = new Map<string, MissionView | Promise<MissionView>>();
    const calls: CallState[] = [];
    const lists = new Map<string, ListFilter>();
    /** The Missions tools/list answers are filtered for (MAS mode: named in their `_meta`). */
    const listScopes: Scope[] = [];
    for (const m of parsed.messages) {
      if (m.kind === 'other') continue;
      if (m.kind === 'invalid_call') {
        const denial = new Denial('parameter_unparseable', { description: 'the tools/call params are not valid' });
        calls.push({ msg: m, action: m.name === null ? null : this.actionOf(m.name), args: NO_ARGS, digest: null, scope: null, denial });
        continue;
      }
      const resolved = this.resolve(ctx, m.metaRef, memo);
      const scope = resolved instanceof Promise ? await resolved : resolved;
      if (m.kind === 'list') {
        lists.set(idKey(m.id), isDenial(scope) ? { visible: NONE, pins: combinePins(this.configPins) } : this.listFilter(ctx, scope));
        if (!isDenial(scope)) listScopes.push(scope);
        continue;
      }
      const action = this.actionOf(m.name);
      const digest = digestOrNull(m.args);
      let denial = isDenial(scope) ? scope : this.decideCall(ctx, m, action, scope);
      // Decided first (a 1e400 over a max_amount is a parameter_violation); a permit must carry a
      // parameter_digest.
      if (denial === null && digest === null) denial = undigestable();
      const index = m.index;
      calls.push({ msg: headOf(m), action, args: (parsed) => argsAt(body, index, parsed), digest, scope: isDenial(scope) ? null : scope, denial });
    }
    return { calls, lists, listScopes };
  }

  /** Step 2: each denied call answered (a task's as a task) and recorded; the permitted ones returned. */
  private answerDenied(ctx: RequestContext, pipeline: Pipeline, parsed: McpBody, calls: readonly CallState[]): { answers: DenialResult[]; permitted: CallState[]; denied: Set<number> | null } {
    const answers: DenialResult[] = [];
    const permitted: CallState[] = [];
    let denied: Set<number> | null = null;
    for (const c of calls) {
      if (c.denial === null) {
        permitted.push(c);
        continue;
      }
      (denied ??= new Set()).add(c.msg.index);
      // A denied call of a batch is a decision of its own: its decision_id finds its record only,
      // never the permit of a call forwarded beside it (which share the request's, the
      // Mission-Decision the upstream receives).
      const decisionId = parsed.batch ? `${ctx.id}_${c.msg.index}` : ctx.id;
      const answer = denialResult(c.msg.id, c.denial, decisionId);
      if (c.msg.kind === 'call' && c.msg.task) {
        // Asked as a task: the requester reads a CreateTaskResult, then the task's result.
        const asTask = taskDenialResult(answer, new Date());
        this.deniedTasks.remember(asTask, principalOf(ctx), Date.now());
        answers.push(asTask);
      } else {
        answers.push(answer);
      }
      this.recordCall(ctx, pipeline, c, 'deny', decisionId);
    }
    return { answers, permitted, denied };
  }

  /**
   * Step 3: the identity the upstream gets (the permitted calls' actions, their Mission in MAS
   * mode), and the Missions what is forwarded runs under, so that any of them ending cuts it, and
   * an authority change decides its calls again (holds.ts); the session too, when there is one.
   */
  private holdForwarded(ctx: RequestContext, permitted: readonly CallState[], listScopes: readonly Scope[], session: string | undefined): void {
    const actions = [...new Set(permitted.map((c) => c.action).filter((a): a is string => a !== null))];
    ctx.action = actions.length === 0 ? null : actions.join(', ');
    if (permitted.length === 1) ctx.parameterDigest = permitted[0]!.digest;
    // The answer flows under every Mission a forwarded message runs under, a permitted call's or
    // the one a tools/list answer is filtered for: any of them ending cuts it (holds.ts).
    const held: { ref: MissionReference; view: MissionView }[] = [];
    for (const s of [...permitted.map((c) => c.scope), ...listScopes]) {
      if (s !== null && s.ref !== null && s.mission !== null) held.push({ ref: s.ref, view: s.mission });
    }
    if (ctx.mission === null && held.length > 0) {
      ctx.mission = held[0]!.view;
      ctx.missionRef = held[0]!.ref;
    }
    // Should a Mission's authority change while the answer flows, the calls forwarded under it are
    // decided again against the authority just read (holds.ts): each Mission reviews its own calls.
    // What a review keeps of the request (a session keeps a task's review as long as it lives).
    const asked: Asked = { token: ctx.token, audience: ctx.audience, path: ctx.path, ref: ctx.missionRef };
    const reviewOf = (key: string): Review | null =>
      reviewOver(this, asked, permitted.filter((c) => c.scope !== null && c.scope.ref !== null && refKey(c.scope.ref) === key));
    const others: { ref: MissionReference; view: MissionView; review: Review | null }[] = [];
    const keys = new Set(ctx.missionRef === null ? [] : [refKey(ctx.missionRef)]);
    for (const h of held) {
      const key = refKey(h.ref);
      if (keys.has(key)) continue;
      keys.add(key);
      others.push({ ...h, review: reviewOf(key) });
    }
    if (others.length > 0) ctx.otherMissions = others;
    if (ctx.missionRef !== null) ctx.review = reviewOf(refKey(ctx.missionRef));
    // A call may outlive its stream (a server waiting on the client, a task running on): the session
    // is reviewed for each Mission's calls as long as it lives.
    if (session !== undefined) this.track(ctx, session, ctx.review, (key) => reviewOf(key));
  }

  /** The request runs in `session` (when it names one): held under its Missions (sessions.ts). */
  private track(ctx: RequestContext, session: string | undefined, review: Review | null = null, calls: (key: string) => Review | null = () => null): void {
    if (session !== undefined) this.sessions!.use(session, ctx, review, calls);
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

    const key = refKey(ref);
    let state = memo.get(key);
    if (state === undefined) {
      // A `_meta` reference is named by the client: its queries count against it (state.ts fetch).
      const opts = ctx.token === null ? { asker: principalOf(ctx) } : { tokenExp: ctx.token.exp, asker: principalOf(ctx) };
      ctx.stage = 'mission_state';
      state = this.lookup.lookup(ref, this.audience, opts);
      memo.set(key, state);
    }
    return state instanceof Promise ? state.then((v) => this.admit(ctx, ref, v)) : this.admit(ctx, ref, state);
  }

  /**
   * Joined to the token's subject and client (a conflict denies the call), and active (else the
   * request is denied), in judgeNamed's order.
   */
  private admit(ctx: RequestContext, ref: MissionReference, view: MissionView): Scope | Denial {
    try {
      judgeNamed(view, () => this.lookup.join(view, ctx.token), Date.now());
    } catch (err) {
      if (isDenial(err) && err.code === 'mission_reference_conflict') return err;
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

  /** A forwarded call decided again under `view` (its Mission, read again): true when still permitted. */
  permitsAgain(asked: Asked, c: CallState, view: MissionView, parsed: ParsedBodies): boolean {
    if (c.action === null || c.msg.kind !== 'call') return false;
    const args = c.args(parsed);
    if (args === null) return false;
    try {
      const params = toolParams(this.toolParams, c.msg.name, args);
      authorizeAction({ token: asked.token, mission: view, missionRef: c.scope?.ref ?? asked.ref, audience: asked.audience, path: asked.path }, this.origin, c.action, params, c.msg.name);
      return true;
    } catch (err) {
      if (isDenial(err)) return false;
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

  private recordCall(ctx: RequestContext, pipeline: Pipeline, c: CallState, decision: 'permit' | 'deny', decisionId = ctx.id): void {
    const saved = { action: ctx.action, digest: ctx.parameterDigest, mission: ctx.mission, ref: ctx.missionRef, status: ctx.upstreamStatus };
    ctx.action = c.action;
    ctx.parameterDigest = c.digest;
    if (c.scope !== null) {
      ctx.mission = c.scope.mission;
      ctx.missionRef = c.scope.ref;
    }
    if (decision === 'deny') ctx.upstreamStatus = null;
    const reason = c.denial === null ? null : c.denial.spec.reason;
    pipeline.record(ctx, decision, reason, { tool: c.msg.name, call_index: c.msg.index, jsonrpc_id: c.msg.id }, decisionId);
    ctx.action = saved.action;
    ctx.parameterDigest = saved.digest;
    ctx.mission = saved.mission;
    ctx.missionRef = saved.ref;
    ctx.upstreamStatus = saved.status;
  }

  /** One permit record for a request that carried no tools/call (tools/list, resumed stream). */
  private recordRequest(ctx: RequestContext, pipeline: Pipeline): void {
    pipeline.record(ctx, 'permit', null);
  }
}

/**
 * The batch without its denied elements, each written as the client sent its numbers (a number a
 * double cannot hold keeps its literal, authority/json.ts): the upstream acts on what was decided.
 */
function batchText(items: readonly unknown[], denied: ReadonlySet<number>): string {
  const kept: string[] = [];
  for (let i = 0; i < items.length; i++) {
    if (!denied.has(i)) kept.push(numberSource(items, String(i)) ?? stringifyExact(items[i]));
  }
  return '[' + kept.join(',') + ']';
}
