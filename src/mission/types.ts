/**
 * The replica bus: Mission lifecycle changes received by one replica reach every replica.
 * In-process for one replica; Redis pub/sub for several (see cluster/).
 */

/** A verified lifecycle change, as applied to the state cache. */
export interface MissionChange {
  readonly issuer: string;
  readonly id: string;
  readonly state: string;
  readonly version: number;
  /** Unix seconds; null when unknown. */
  readonly suspendUntil: number | null;
  readonly expiresAt: number | null;
  /** True when authority narrowed (refetch Status), or a version gap was seen. */
  readonly refetch: boolean;
  /** The SET's jti, for duplicate suppression across replicas. */
  readonly jti: string;
}

export interface MissionBus {
  /** Publishes a change to the other replicas; resolves once sent (not necessarily delivered). */
  publish(change: MissionChange): Promise<void>;
  /** Handler for changes published by other replicas. */
  subscribe(handler: (change: MissionChange) => void): void;
  close(): Promise<void>;
}
