/**
 * Rendering the chart with the real helm binary and validating every object offline against the
 * Kubernetes schemas (kubernetes-models; prometheus-operator models for ServiceMonitor).
 */
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import * as monitoring from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as core from 'kubernetes-models/v1';
import { CHART, helm } from './helm.js';

export const VALUES = join(import.meta.dirname, 'values');

export interface K8sObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> };
  readonly [field: string]: unknown;
}

type ModelClass = new (data: unknown) => { validate(): void };

const MODELS: Record<string, Record<string, unknown>> = {
  v1: core,
  'apps/v1': apps,
  'autoscaling/v2': autoscaling,
  'policy/v1': policy,
  'networking.k8s.io/v1': networking,
  'monitoring.coreos.com/v1': monitoring,
};

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Throws with the object's kind/name and the schema's message when the object is not valid. */
export function validateObject(obj: K8sObject): void {
  const Model = MODELS[obj.apiVersion]?.[obj.kind] as ModelClass | undefined;
  if (Model === undefined) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
  try {
    new Model(obj).validate();
  } catch (err) {
    throw new Error(`${obj.kind}/${obj.metadata?.name}: ${(err as Error).message}`);
  }
  const name = obj.metadata.name;
  if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) throw new Error(`${obj.kind}: invalid name ${name}`);
  if (obj.kind === 'Service' && (name.length > 63 || !DNS_LABEL.test(name))) throw new Error(`Service name must be a DNS label: ${name}`);
}

export interface Rendered {
  readonly objects: K8sObject[];
  find(kind: string): K8sObject | undefined;
  all(kind: string): K8sObject[];
}

export async function render(args: readonly string[], options: { kubeVersion?: string; release?: string; namespace?: string; chart?: string } = {}): Promise<Rendered> {
  const r = await helm([
    'template',
    options.release ?? 'gw',
    options.chart ?? CHART,
    '--namespace',
    options.namespace ?? 'apis',
    '--kube-version',
    options.kubeVersion ?? '1.30.0',
    ...args,
  ]);
  if (r.code !== 0) throw new Error(`helm template failed: ${r.stderr}`);
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(r.stdout)) {
    if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors[0]?.message}`);
    const value = doc.toJS() as K8sObject | null;
    if (value !== null) objects.push(value);
  }
  return {
    objects,
    find: (kind) => objects.find((o) => o.kind === kind),
    all: (kind) => objects.filter((o) => o.kind === kind),
  };
}

export function valuesFile(name: string): string {
  return join(VALUES, `${name}.yaml`);
}
