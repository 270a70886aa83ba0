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
  /**
   * The compact SET the change was read from. A replica hearing the change on the bus verifies this
   * again and applies what it says, never the message's own fields: whoever can write to the bus
   * cannot forge a state the issuer did not sign. Null only for a change made up in a test.
   */
  readonly set: string | null;
}

export interface MissionBus {
  /** Publishes a change to the other replicas; resolves once sent (not necessarily delivered). */
  publish(change: MissionChange): Promise<void>;
  /**
   * Handler for changes published by other replicas. `onGap`: changes were lost before this
   * replica read them (the stream was trimmed past its position), so what it cached may be out of date.
   */
  subscribe(handler: (change: MissionChange) => void, onGap?: () => void): void;
  /** False while this replica cannot read what the others publish (`/readyz` `replica_bus`). */
  ready(): boolean;
  /** Resolves once a bus behind connections has first tried to open them (as ReplayStore.opened). */
  opened?(): Promise<void>;
  close(): Promise<void>;
}
