/* eslint-disable @typescript-eslint/no-explicit-any -- rendered manifests are walked as plain JSON */
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { CHART, helm } from './helm.js';
import { render, validateObject, valuesFile, type K8sObject, type Rendered } from './k8s.js';

const KUBE_VERSIONS = ['1.27.0', '1.30.0', '1.33.0'];
const MODES = ['standalone-minimal', 'standalone-full', 'sidecar', 'embedded'] as const;
const ENV = { MISSION_GATEWAY_REDIS_URL: 'redis://redis:6379', DPOP_NONCE_SECRET: 'x'.repeat(40) };

const pod = (r: Rendered): any => (r.find('Deployment') as any).spec.template;
const containers = (r: Rendered): any[] => pod(r).spec.containers;
const gateway = (r: Rendered): any => containers(r).find((c) => c.name === 'mission-gateway');
const configText = (r: Rendered): string => (r.find('ConfigMap') as any).data['config.yaml'];

/** The rendered config.yaml, validated by the gateway's own config schema (SPEC section 2). */
function gatewayConfig(r: Rendered): ReturnType<typeof parseConfigText> {
  return parseConfigText(configText(r), '/etc/mission-gateway/config', ENV);
}

describe('chart: helm lint --strict', () => {
  it.each(MODES)('%s values lint clean', async (mode) => {
    const r = await helm(['lint', '--strict', CHART, '-f', valuesFile(mode)]);
    expect(r.stderr + r.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(r.code).toBe(0);
  });
});

describe('chart: every rendered object is a valid Kubernetes object', () => {
  const cases = MODES.flatMap((mode) => KUBE_VERSIONS.map((v) => [mode, v] as const));
  it.each(cases)('%s on Kubernetes %s', async (mode, kubeVersion) => {
    const r = await render(['-f', valuesFile(mode)], { kubeVersion });
    expect(r.objects.length).toBeGreaterThan(0);
    for (const obj of r.objects) {
      validateObject(obj);
      expect(obj.metadata.namespace).toBe('apis');
      expect(obj.metadata.labels?.['app.kubernetes.io/instance']).toBe('gw');
    }
    // The gateway's config is valid for the gateway itself.
    expect(() => gatewayConfig(r)).not.toThrow();
  });

  it('refuses a Kubernetes older than the chart supports', async () => {
    await expect(render(['-f', valuesFile('standalone-minimal')], { kubeVersion: '1.24.0' })).rejects.toThrow(/kubeVersion/i);
  });

  it('the validator itself rejects a broken object (so the checks above can fail)', () => {
    const broken = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, spec: { selector: {}, template: { spec: { containers: [{ name: 'c', ports: [{ containerPort: 'http' }] }] } } } };
    expect(() => validateObject(broken as unknown as K8sObject)).toThrow(/containerPort/);
    expect(() => validateObject({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'Bad_Name' } })).toThrow(/name/);
  });
});

describe('chart: standalone mode', () => {
  it('renders Deployment, Service, ConfigMap, ServiceAccount, NetworkPolicy and PDB; no HPA or ServiceMonitor by default', async () => {
    const r = await render(['-f', valuesFile('standalone-minimal')]);
    expect(r.objects.map((o) => o.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'NetworkPolicy', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
    expect((r.find('Deployment') as any).spec.replicas).toBe(1);
  });

  it('the config.yaml carries the convenience values and binds admin where probes reach it', async () => {
    const r = await render(['-f', valuesFile('standalone-minimal')]);
    const c = gatewayConfig(r);
    expect(c.public_base_url).toBe('https://api.example.com');
    expect(c.resource).toBe('https://api.example.com');
    expect(c.upstream.url).toBe('http://invoices-api.apis.svc:3000');
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(c.admin).toEqual({ host: '0.0.0.0', port: 9090 });
    expect(c.replay_store).toEqual({ type: 'memory' });
  });

  it('probes: liveness /healthz, readiness /readyz, on the admin port that the config listens on', async () => {
    const r = await render(['-f', valuesFile('standalone-minimal'), '--set', 'gateway.adminPort=9191']);
    const g = gateway(r);
    const adminPort = g.ports.find((p: any) => p.name === 'mgw-admin');
    expect(adminPort.containerPort).toBe(9191);
    expect(gatewayConfig(r).admin.port).toBe(9191);
    expect(g.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'mgw-admin' });
    expect(g.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'mgw-admin' });
    expect(g.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'mgw-admin' });
  });

  it('the config is mounted where the container reads it; keys from Secrets under /etc/mission-gateway/keys', async () => {
    const r = await render(['-f', valuesFile('standalone-full')]);
    const g = gateway(r);
    const configArg = g.args[g.args.indexOf('--config') + 1];
    const mounts = new Map<string, any>(g.volumeMounts.map((m: any) => [m.name, m]));
    expect(configArg).toBe(`${mounts.get('mgw-config').mountPath}/config.yaml`);
    // The same file for the CLI's other verbs run in the container (kubectl exec … -- mission-gateway check).
    expect(g.env.find((e: any) => e.name === 'MISSION_GATEWAY_CONFIG')).toEqual({ name: 'MISSION_GATEWAY_CONFIG', value: configArg });
    const volumes = new Map<string, any>(pod(r).spec.volumes.map((v: any) => [v.name, v]));
    expect(volumes.get('mgw-config').configMap.name).toBe(r.find('ConfigMap')!.metadata.name);
    expect(mounts.get('mgw-keys-mission-client')).toEqual({ name: 'mgw-keys-mission-client', mountPath: '/etc/mission-gateway/keys/mission-client', readOnly: true });
    expect(volumes.get('mgw-keys-mission-client').secret).toEqual({ secretName: 'gw-mission-client', defaultMode: 0o440 });
    expect(volumes.get('mgw-keys-evidence').secret.items).toEqual([{ key: 'evidence.pem', path: 'evidence.pem' }]);
    // Every key file the config names lies inside a mounted key Secret.
    const c = gatewayConfig(r);
    for (const file of [c.mission.client?.private_key_file, c.evidence.sign?.private_key_file]) {
      expect([...mounts.values()].some((m) => m.name.startsWith('mgw-keys-') && file?.startsWith(`${m.mountPath}/`))).toBe(true);
    }
    for (const m of mounts.values()) expect(m.readOnly).toBe(true);
  });

  it('security context: non-root, read-only root filesystem, no privilege escalation, all capabilities dropped, no API token', async () => {
    const r = await render(['-f', valuesFile('standalone-minimal')]);
    const spec = pod(r).spec;
    expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    expect(gateway(r).securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, privileged: false, capabilities: { drop: ['ALL'] } });
    expect(spec.automountServiceAccountToken).toBe(false);
    expect((r.find('ServiceAccount') as any).automountServiceAccountToken).toBe(false);
    expect(gateway(r).resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } });
  });

  it('SIGTERM drain fits the grace period: terminationGracePeriodSeconds > preStop sleep + shutdown_grace_s', async () => {
    const r = await render(['-f', valuesFile('standalone-full')]);
    const g = gateway(r);
    expect(g.lifecycle.preStop.exec.command).toEqual(['sleep', '10']);
    expect(pod(r).spec.terminationGracePeriodSeconds).toBeGreaterThan(10 + 25);
  });

  it('the config checksum annotation is the SHA-256 of config.yaml, and changes when the config does', async () => {
    const a = await render(['-f', valuesFile('standalone-minimal')]);
    const b = await render(['-f', valuesFile('standalone-minimal')]);
    const c = await render(['-f', valuesFile('standalone-minimal'), '--set', 'config.max_body_bytes=2048']);
    const sum = (r: Rendered): string => pod(r).metadata.annotations['checksum/mission-gateway-config'];
    expect(sum(a)).toBe(createHash('sha256').update(configText(a)).digest('hex'));
    expect(sum(a)).toBe(sum(b));
    expect(sum(c)).not.toBe(sum(a));
    expect(gatewayConfig(c).max_body_bytes).toBe(2048);
  });

  it('full values: HPA on the Deployment (no fixed replicas), PDB, ServiceMonitor on the admin port, Redis URL from a Secret', async () => {
    const r = await render(['-f', valuesFile('standalone-full')]);
    const deployment = r.find('Deployment') as any;
    expect(deployment.spec.replicas).toBeUndefined();
    const hpa = r.find('HorizontalPodAutoscaler') as any;
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    expect([hpa.spec.minReplicas, hpa.spec.maxReplicas]).toEqual([3, 12]);
    expect(hpa.spec.metrics.map((m: any) => [m.resource.name, m.resource.target.averageUtilization])).toEqual([
      ['cpu', 60],
      ['memory', 80],
    ]);
    const pdb = r.find('PodDisruptionBudget') as any;
    expect(pdb.spec).toEqual({ minAvailable: 2, selector: { matchLabels: deployment.spec.selector.matchLabels } });
    const service = r.find('Service') as any;
    const sm = r.find('ServiceMonitor') as any;
    expect(sm.metadata.labels.release).toBe('prometheus');
    expect(sm.spec.endpoints).toEqual([{ port: 'admin', path: '/metrics', interval: '30s', scrapeTimeout: '10s' }]);
    expect(sm.spec.selector.matchLabels).toEqual(service.spec.selector);
    expect(service.spec.ports.find((p: any) => p.name === 'admin').targetPort).toBe('mgw-admin');
    const redisEnv = gateway(r).env.find((e: any) => e.name === 'MISSION_GATEWAY_REDIS_URL');
    expect(redisEnv).toEqual({ name: 'MISSION_GATEWAY_REDIS_URL', valueFrom: { secretKeyRef: { name: 'gw-redis', key: 'url' } } });
    const c = gatewayConfig(r);
    expect(c.replay_store).toEqual({ type: 'redis', url: 'redis://redis:6379', key_prefix: 'invoices:', connect_timeout_ms: 1000 });
    expect(configText(r)).not.toContain('redis://redis');
    expect(gateway(r).image).toBe('registry.example.com/mission-gateway@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef');
  });

  it('Service targets the gateway port by name; selector matches the Pods', async () => {
    const r = await render(['-f', valuesFile('standalone-minimal')]);
    const service = r.find('Service') as any;
    expect(service.spec.ports).toEqual([{ name: 'http', port: 80, targetPort: 'mgw-http', protocol: 'TCP' }]);
    expect(pod(r).metadata.labels).toMatchObject(service.spec.selector);
  });

  it('Ingress (ingress.enabled): to the Service\'s http port, for the host of publicBaseUrl unless hosts are given', async () => {
    const r = await render(['-f', valuesFile('standalone-minimal'), '--set', 'ingress.enabled=true', '--set', 'ingress.className=nginx']);
    const ingress = r.find('Ingress') as any;
    const service = r.find('Service') as any;
    expect(ingress.spec.ingressClassName).toBe('nginx');
    expect(ingress.spec.rules).toEqual([
      { host: 'api.example.com', http: { paths: [{ path: '/', pathType: 'Prefix', backend: { service: { name: service.metadata.name, port: { name: 'http' } } } }] } },
    ]);
    expect(service.spec.ports.map((p: any) => p.name)).toContain('http');
    expect(ingress.spec.tls).toBeUndefined();
    const given = await render([
      '-f', valuesFile('standalone-minimal'), '--set', 'ingress.enabled=true', '--set', 'ingress.hosts={a.example.com,b.example.com}',
      '--set', 'ingress.tls[0].secretName=ab-tls', '--set', 'ingress.tls[0].hosts={a.example.com,b.example.com}', '--set', 'ingress.annotations.x/y=z',
    ]);
    const i2 = given.find('Ingress') as any;
    expect(i2.spec.rules.map((rule: any) => rule.host)).toEqual(['a.example.com', 'b.example.com']);
    expect(i2.spec.tls).toEqual([{ secretName: 'ab-tls', hosts: ['a.example.com', 'b.example.com'] }]);
    expect(i2.metadata.annotations).toEqual({ 'x/y': 'z' });
    expect((await render(['-f', valuesFile('standalone-minimal')])).find('Ingress')).toBeUndefined();
  });

  it('NetworkPolicy admits only the proxy and admin ports, from the configured peers', async () => {
    const r = await render(['-f', valuesFile('standalone-full')]);
    const np = r.find('NetworkPolicy') as any;
    expect(np.spec.podSelector.matchLabels).toEqual((r.find('Deployment') as any).spec.selector.matchLabels);
    expect(np.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(np.spec.ingress).toEqual([
      { ports: [{ port: 'mgw-http', protocol: 'TCP' }], from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress' } } }] },
      { ports: [{ port: 'mgw-admin', protocol: 'TCP' }], from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }] },
    ]);
  });

  it('NOTES.txt says how to reach the gateway', async () => {
    const r = await helm(['install', 'gw', CHART, '--dry-run=client', '--namespace', 'apis', '-f', valuesFile('standalone-minimal')]);
    expect(r.code).toBe(0);
    const notes = r.stdout.slice(r.stdout.indexOf('NOTES:'));
    expect(notes).toContain('http://gw-mission-gateway.apis.svc:80');
    expect(notes).toContain('kubectl -n apis port-forward svc/gw-mission-gateway 8080:80');
    expect(notes).toContain('/readyz');
    expect(notes).not.toContain('WARNING');
    const accepted = await helm(['install', 'gw', CHART, '--dry-run=client', '--namespace', 'apis', '-f', valuesFile('standalone-minimal'), '--set', 'replicaCount=2', '--set', 'allowPerReplicaReplayStore=true']);
    expect(accepted.stdout).toContain('WARNING: several replicas with the in-memory replay store');
  });
});

describe('chart: sidecar mode', () => {
  it('one Pod with the app and the gateway; the gateway forwards to the app over 127.0.0.1', async () => {
    const r = await render(['-f', valuesFile('sidecar')]);
    expect(containers(r).map((c) => c.name)).toEqual(['invoices-api', 'mission-gateway']);
    expect(gatewayConfig(r).upstream.url).toBe('http://127.0.0.1:3000');
    expect(pod(r).spec.volumes.map((v: any) => v.name)).toEqual(['mgw-config', 'mgw-keys-mission-client', 'app-tmp']);
    expect(gatewayConfig(r).replay_store.type).toBe('redis');
  });

  it("closes the app's port to everything but the gateway: no containerPort, no Service port, NetworkPolicy admits the gateway's ports only", async () => {
    const r = await render(['-f', valuesFile('sidecar')]);
    const app = containers(r).find((c) => c.name === 'invoices-api');
    expect(app.ports).toBeUndefined();
    const service = r.find('Service') as any;
    expect(service.spec.ports.map((p: any) => p.targetPort)).toEqual(['mgw-http']);
    const np = r.find('NetworkPolicy') as any;
    expect(np.spec.policyTypes).toContain('Ingress');
    const allowed = np.spec.ingress.flatMap((rule: any) => rule.ports.map((p: any) => p.port));
    expect(allowed).toEqual(['mgw-http', 'mgw-admin']);
    expect(np.spec.ingress.every((rule: any) => Array.isArray(rule.ports) && rule.ports.length > 0)).toBe(true);
    expect(pod(r).metadata.labels).toMatchObject(np.spec.podSelector.matchLabels);
  });
});

describe('chart: embedded mode and the named templates other charts include', () => {
  it('embedded renders only the ConfigMap and the NetworkPolicy for the parent’s Pods', async () => {
    const r = await render(['-f', valuesFile('embedded')]);
    expect(r.objects.map((o) => o.kind).sort()).toEqual(['ConfigMap', 'NetworkPolicy']);
    expect((r.find('NetworkPolicy') as any).spec.podSelector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'crm' });
  });

  const parentDir = mkdtempSync(join(tmpdir(), 'mgw-parent-'));
  afterAll(() => rmSync(parentDir, { recursive: true, force: true }));

  it('a parent chart adds the gateway container, volumes and checksum to its own Pod via .Subcharts', async () => {
    mkdirSync(join(parentDir, 'templates'), { recursive: true });
    cpSync(CHART, join(parentDir, 'charts', 'mission-gateway'), { recursive: true });
    writeFileSync(
      join(parentDir, 'Chart.yaml'),
      ['apiVersion: v2', 'name: crm', 'version: 1.0.0', 'dependencies:', '  - name: mission-gateway', '    version: 0.1.0', ''].join('\n'),
    );
    writeFileSync(
      join(parentDir, 'values.yaml'),
      [
        'mission-gateway:',
        '  mode: embedded',
        '  gateway: { publicBaseUrl: "https://crm.example.com", upstreamUrl: "http://127.0.0.1:8000" }',
        '  embedded: { podSelector: { app: crm } }',
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(parentDir, 'templates', 'deployment.yaml'),
      `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-crm
  namespace: {{ .Release.Namespace }}
  labels: { app.kubernetes.io/instance: {{ .Release.Name }} }
spec:
  selector: { matchLabels: { app: crm } }
  template:
    metadata:
      labels: { app: crm }
      annotations:
        {{- include "mission-gateway.sidecar.podAnnotations" (index .Subcharts "mission-gateway") | nindent 8 }}
    spec:
      containers:
        - name: crm
          image: registry.example.com/crm:2.0.0
        {{- include "mission-gateway.sidecar.container" (index .Subcharts "mission-gateway") | nindent 8 }}
      volumes:
        {{- include "mission-gateway.sidecar.volumes" (index .Subcharts "mission-gateway") | nindent 8 }}
`,
    );
    const r = await render([], { chart: parentDir });
    for (const obj of r.objects) validateObject(obj);
    expect(containers(r).map((c) => c.name)).toEqual(['crm', 'mission-gateway']);
    const cm = r.find('ConfigMap')!;
    expect(pod(r).spec.volumes.find((v: any) => v.name === 'mgw-config').configMap.name).toBe(cm.metadata.name);
    expect(pod(r).metadata.annotations['checksum/mission-gateway-config']).toBe(createHash('sha256').update(configText(r)).digest('hex'));
    expect(gatewayConfig(r).upstream.url).toBe('http://127.0.0.1:8000');
    expect((r.find('NetworkPolicy') as any).spec.podSelector.matchLabels).toEqual({ app: 'crm' });
  });
});

describe('chart: values.schema.json and the chart reject invalid values', () => {
  const base = ['-f', valuesFile('standalone-minimal')];
  it.each([
    ['an unknown mode', ['--set', 'mode=daemonset'], /mode/],
    ['an unknown top-level key', ['--set', 'replicas=3'], /additional properties 'replicas'/],
    ['a port out of range', ['--set', 'gateway.port=70000'], /port/],
    ['a non-numeric port', ['--set-string', 'gateway.adminPort=admin'], /adminPort/],
    ['listen set inside config', ['--set', 'config.listen.port=1'], /config/],
    ['a public base URL with a path', ['--set', 'gateway.publicBaseUrl=https://api.example.com/v1'], /publicBaseUrl/],
    ['an upstream that is not a URL', ['--set', 'gateway.upstreamUrl=api:3000'], /upstreamUrl/],
    ['a malformed image digest', ['--set', 'image.digest=sha256:abc'], /digest/],
    ['a privileged container', ['--set', 'securityContext.privileged=true'], /privileged/],
    ['a non-http Redis URL', ['--set', 'redis.enabled=true', '--set', 'redis.url=http://redis:6379'], /url/],
    ['a misspelled PDB key', ['--set', 'podDisruptionBudget.minAvaliable=1'], /minAvaliable/],
    ['an invalid key mount name', ['--set', 'keys[0].name=Bad_Name', '--set', 'keys[0].secretName=s'], /name/],
    ['sidecar mode without an app container', ['--set', 'mode=sidecar'], /container/],
    ['sidecar mode with the NetworkPolicy off', ['-f', valuesFile('sidecar'), '--set', 'networkPolicy.enabled=false'], /enabled/],
    ['several replicas with the in-memory replay store', ['--set', 'replicaCount=3'], /redis\.enabled/],
    ['autoscaling with the in-memory replay store', ['--set', 'autoscaling.enabled=true'], /redis\.enabled/],
    ['several replicas with DPoP nonces but no shared nonce secret', ['--set', 'replicaCount=2', '--set', 'redis.enabled=true', '--set', 'redis.url=redis://redis:6379', '--set', 'config.dpop.nonce=true'], /dpop\.nonce_secret/],
    ['an Ingress host that is not a host name', ['--set', 'ingress.enabled=true', '--set', 'ingress.hosts={https://api.example.com}'], /hosts/],
    ['an Ingress host that is an IP address', ['--set', 'ingress.enabled=true', '--set', 'ingress.hosts={10.0.0.5}'], /hosts/],
    ['an Ingress for a publicBaseUrl whose host is an IP address', ['--set', 'ingress.enabled=true', '--set', 'gateway.publicBaseUrl=http://10.0.0.5:8080'], /IP address/],
    ['an Ingress TLS entry without a Secret', ['--set', 'ingress.enabled=true', '--set', 'ingress.tls[0].hosts={api.example.com}'], /secretName/],
    ['an Ingress whose host the chart cannot know (public_base_url from the environment)', ['--set', 'ingress.enabled=true', '--set', 'config.public_base_url=${PUBLIC_URL}', '--set', 'gateway.publicBaseUrl='], /ingress\.hosts/],
    ['Redis on without a URL or Secret', ['--set', 'redis.enabled=true'], /redis\.url or redis\.existingSecret/],
    ['both minAvailable and maxUnavailable', ['--set', 'podDisruptionBudget.minAvailable=1'], /exactly one/],
    ['embedded mode without a pod selector', ['--set', 'mode=embedded'], /podSelector/],
  ])('rejects %s', async (_what, args, message) => {
    const r = await helm(['template', 'gw', CHART, '--kube-version', '1.30.0', ...base, ...args]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });

  it('rejects missing required values (no publicBaseUrl, no upstream)', async () => {
    const r = await helm(['template', 'gw', CHART]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/publicBaseUrl/);
    const r2 = await helm(['template', 'gw', CHART, '--set', 'gateway.publicBaseUrl=https://api.example.com']);
    expect(r2.stderr).toMatch(/upstreamUrl/);
  });

  it('accepts several replicas with Redis, or when per-replica replay is accepted explicitly', async () => {
    await expect(render([...base, '--set', 'replicaCount=3', '--set', 'redis.enabled=true', '--set', 'redis.url=redis://redis:6379'])).resolves.toBeDefined();
    const r = await render([...base, '--set', 'replicaCount=3', '--set', 'allowPerReplicaReplayStore=true']);
    expect((r.find('Deployment') as any).spec.replicas).toBe(3);
    const nonces = ['--set', 'config.dpop.nonce=true', '--set', 'config.dpop.nonce_secret=${DPOP_NONCE_SECRET}'];
    await expect(render([...base, '--set', 'replicaCount=3', '--set', 'redis.enabled=true', '--set', 'redis.url=redis://redis:6379', ...nonces])).resolves.toBeDefined();
  });
});
