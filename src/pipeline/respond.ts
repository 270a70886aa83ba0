/**
 * Writing denials (SPEC section 5): the JSON body, `Mission-Decision`, and the WWW-Authenticate
 * challenge built from strings precomputed at start.
 */
import type { ServerResponse } from 'node:http';
import type { Denial, DenialSpec } from '../errors.js';
import { writeJson } from '../http/json.js';

export interface ChallengeParams {
  /** `algs` attribute value, e.g. "ES256 EdDSA". */
  readonly algs: string;
  /** `resource_metadata` URL for this request's resource. */
  readonly resourceMetadata: string;
  /** True when Bearer is allowed (`dpop.required: false`): the Bearer challenge then comes first. */
  readonly bearerAllowed: boolean;
}

/** Precomputed challenge strings for one resource (HTTP resource or MCP resource). */
export class Challenges {
  private readonly tail: string;
  private readonly bearer: string | null;

  constructor(params: ChallengeParams) {
    this.tail = `algs="${params.algs}", resource_metadata="${params.resourceMetadata}"`;
    this.bearer = params.bearerAllowed ? `resource_metadata="${params.resourceMetadata}"` : null;
  }

  /** The WWW-Authenticate value for a denial, or null when it carries none. */
  forDenial(spec: DenialSpec): string | null {
    let dpop: string;
    let bearerError: string | null = null;
    switch (spec.challenge) {
      case 'none':
        return null;
      case 'bare':
        dpop = `DPoP ${this.tail}`;
        break;
      case 'error':
        dpop = `DPoP error="${spec.error}", ${this.tail}`;
        if (spec.error === 'invalid_token') bearerError = spec.error;
        break;
      case 'authority':
        dpop = `DPoP error="${spec.error}", mission_denial="${spec.missionDenial ?? 'insufficient_authority'}", ${this.tail}`;
        bearerError = spec.error;
        break;
      case 'nonce':
        dpop = `DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof", ${this.tail}`;
        break;
    }
    if (this.bearer === null) return dpop;
    const bearer = bearerError === null ? `Bearer ${this.bearer}` : `Bearer error="${bearerError}", ${this.bearer}`;
    return `${bearer}, ${dpop}`;
  }
}

export interface DenialBody {
  error: string;
  error_description: string;
  denial_reason: string | null;
  decision_id: string;
  [member: string]: unknown;
}

export function denialBody(denial: Denial, decisionId: string): DenialBody {
  return {
    error: denial.spec.error,
    error_description: denial.message,
    denial_reason: denial.spec.reason,
    decision_id: decisionId,
    ...denial.extra,
  };
}

/** Writes a denial response. When headers were already sent, the connection is cut instead (writeJson). */
export function writeDenial(
  res: ServerResponse,
  denial: Denial,
  decisionId: string,
  challenges: Challenges | null,
  dpopNonce: string | null,
): void {
  const headers: Record<string, string> = { 'mission-decision': decisionId };
  const challenge = challenges?.forDenial(denial.spec) ?? null;
  if (challenge !== null) headers['www-authenticate'] = challenge;
  if (denial.retryAfter !== undefined) headers['retry-after'] = retryAfterValue(denial.retryAfter);
  if (dpopNonce !== null) headers['dpop-nonce'] = dpopNonce;
  writeJson(res, denial.spec.status, JSON.stringify(denialBody(denial, decisionId)), headers);
}

/**
 * RFC 9110 section 10.2.3 delay-seconds (digits only), at most 2^31 as RFC 9111 section 1.2.2
 * bounds delta-seconds: a `suspend_until` of 1e308 would otherwise be written `1e+308` (r20d 3).
 */
export function retryAfterValue(seconds: number): string {
  return String(Math.min(MAX_DELAY_SECONDS, Math.max(0, Math.ceil(seconds))) || 0);
}

const MAX_DELAY_SECONDS = 2_147_483_648;
