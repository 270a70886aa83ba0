/**
 * What a valid config still needs from the machine it starts on: key files that load as start
 * loads them, and an evidence file that can be written. `check` and start run the same checks, so
 * a config that passes `check` there does not fail at start for these, and both exit 2 naming the
 * key path. (Gateway.create, used as a library, still starts with an unwritable evidence file:
 * unhealthy, denying every request, reopening it until it can write.)
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { signingKey } from '../evidence/keys.js';
import { keyFileProblems, machineNeeds, type MachineNeeds } from './load.js';
import type { Config } from './schema.js';

/** Every problem, each `key.path: message`; empty when the config can start here. */
export function preflightProblems(config: Config): string[] {
  return machineProblems(machineNeeds(config));
}

/** The same for what a file names, valid or not (ConfigError.needs). */
export function machineProblems(needs: MachineNeeds): string[] {
  const out = keyFileProblems(needs);
  const signKey = needs.signKey;
  if (signKey !== undefined && !out.some((p) => p.startsWith('evidence.sign.private_key_file:'))) {
    try {
      signingKey(readFileSync(signKey, 'utf8'), needs.signKid);
    } catch (err) {
      out.push(`evidence.sign.private_key_file: ${signKey}: ${(err as Error).message}`);
    }
  }
  const sink = needs.sink === undefined ? null : sinkProblem(needs.sink);
  if (sink !== null) out.push(`evidence.sink: ${sink}`);
  return out;
}

function code(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/** A file sink's folder must exist, and the file (or, when it does not exist yet, the folder) be writable. */
function sinkProblem(sink: string): string | null {
  if (sink === 'stdout' || sink === 'stderr') return null;
  const folder = dirname(sink);
  try {
    if (!statSync(folder).isDirectory()) return `${folder} is not a folder`;
  } catch (err) {
    return code(err) === 'ENOENT' ? `folder ${folder} does not exist; create it (the gateway does not)` : `cannot use folder ${folder} (${code(err)})`;
  }
  let exists = true;
  try {
    if (statSync(sink).isDirectory()) return `${sink} is a folder; name a file in it`;
  } catch {
    exists = false;
  }
  try {
    accessSync(exists ? sink : folder, constants.W_OK);
  } catch (err) {
    return exists ? `cannot write to ${sink} (${code(err)})` : `cannot create ${sink}: folder ${folder} is not writable (${code(err)})`;
  }
  return null;
}
