/**
 * One decision evidence record (SPEC section 9). Members that do not apply are null. Never contains
 * a token, proof or raw parameter value. `sequence` and `prev_hash` are set by the sink.
 */
import type { MissionStateSource } from '../pipeline/context.js';
import type { RecordLayout } from './format.js';

export interface EvidenceMission {
  readonly id: string | null;
  readonly issuer: string;
  readonly state: string | null;
  readonly version: number | null;
  readonly authority_hash: string | null;
  readonly source: MissionStateSource | null;
}

export interface EvidenceRecord {
  readonly evidence_id: string;
  readonly decision_id: string;
  readonly decision: 'permit' | 'deny';
  readonly denial_reason: string | null;
  readonly evaluated_at: string;
  readonly audience: string;
  readonly method: string;
  readonly path: string;
  readonly action: string | null;
  readonly subject: string | null;
  readonly client_id: string | null;
  readonly actor: unknown;
  readonly token_jti: string | null;
  readonly jkt: string | null;
  readonly mission: EvidenceMission | null;
  readonly parameter_digest: string | null;
  readonly upstream_status: number | null;
  readonly duration_ms: number;
  /** Extra members (e.g. `tool`, `kind`, `mcp_id`) are allowed after the fixed ones. */
  readonly [member: string]: unknown;
}

/** The sink's view: write one record; sequence and prev_hash are added by the sink, in order. */
export interface EvidenceSink {
  /** `layout`: how the record was built, when the writer may serialize it as is (format.ts). */
  write(record: EvidenceRecord, layout?: RecordLayout): void;
  /** False once a write failed (requests are then denied `evidence_unavailable`). */
  healthy(): boolean;
  close(): Promise<void>;
}
