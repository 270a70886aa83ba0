{{/*
Names and labels. Every helper takes a root-like context (.Values, .Release, .Chart), so that a
parent chart can call the sidecar helpers with this chart's context: (index .Subcharts "mission-gateway").
*/}}
{{- define "mission-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mission-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mission-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mission-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mission-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mission-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ ternary "gateway" "app-with-gateway" (eq .Values.mode "standalone") }}
{{- end -}}

{{- define "mission-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mission-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mission-gateway.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "mission-gateway.configMapName" -}}
{{- default (printf "%s-config" (include "mission-gateway.fullname" .)) .Values.existingConfigMap -}}
{{- end -}}

{{/*
The gateway config (SPEC section 2) as YAML: `config` with the values that the chart owns laid over
it. listen/admin bind 0.0.0.0 so that kubelet probes and the Service reach them; the NetworkPolicy,
not the bind address, limits who else does.
*/}}
{{- define "mission-gateway.configYaml" -}}
{{- $v := .Values -}}
{{- $c := deepCopy (default (dict) $v.config) -}}
{{- $_ := set $c "listen" (dict "host" "0.0.0.0" "port" (int $v.gateway.port)) -}}
{{- $_ := set $c "admin" (dict "host" "0.0.0.0" "port" (int $v.gateway.adminPort)) -}}
{{- if $v.gateway.publicBaseUrl -}}
{{- $_ := set $c "public_base_url" $v.gateway.publicBaseUrl -}}
{{- end -}}
{{- if $v.gateway.resource -}}
{{- $_ := set $c "resource" $v.gateway.resource -}}
{{- else if and (not (hasKey $c "resource")) (hasKey $c "public_base_url") -}}
{{- $_ := set $c "resource" (get $c "public_base_url") -}}
{{- end -}}
{{- $up := deepCopy (default (dict) (get $c "upstream")) -}}
{{- if $v.gateway.upstreamUrl -}}
{{- $_ := set $up "url" $v.gateway.upstreamUrl -}}
{{- else if and (ne $v.mode "standalone") (not (hasKey $up "url")) -}}
{{- $_ := set $up "url" (printf "http://127.0.0.1:%d" (int $v.app.port)) -}}
{{- end -}}
{{- if $up -}}
{{- $_ := set $c "upstream" $up -}}
{{- end -}}
{{- if $v.redis.enabled -}}
{{- $_ := set $c "replay_store" (dict "type" "redis" "url" "${MISSION_GATEWAY_REDIS_URL}" "key_prefix" $v.redis.keyPrefix "connect_timeout_ms" (int $v.redis.connectTimeoutMs)) -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{- define "mission-gateway.configChecksum" -}}
{{- if .Values.existingConfigMap -}}
{{- printf "existing:%s" .Values.existingConfigMap | sha256sum -}}
{{- else -}}
{{- printf "%s\n" (include "mission-gateway.configYaml" .) | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* Problems the schema cannot see because they span several values. */}}
{{- define "mission-gateway.validate" -}}
{{- $v := .Values -}}
{{- if not $v.existingConfigMap -}}
{{- $c := include "mission-gateway.configYaml" . | fromYaml -}}
{{- if not (get $c "public_base_url") -}}
{{- fail "gateway.publicBaseUrl (or config.public_base_url) is required" -}}
{{- end -}}
{{- if not (get (default (dict) (get $c "upstream")) "url") -}}
{{- fail "gateway.upstreamUrl (or config.upstream.url) is required in standalone mode" -}}
{{- end -}}
{{- $store := get (default (dict "type" "memory") (get $c "replay_store")) "type" -}}
{{- $many := or (gt (int $v.replicaCount) 1) (and $v.autoscaling.enabled (ne $v.mode "embedded")) -}}
{{- if and $many (ne $store "redis") (not $v.allowPerReplicaReplayStore) -}}
{{- fail "more than one gateway replica needs redis.enabled (replay_store type redis): with the in-memory store a DPoP or ID-JAG jti used on one replica is accepted again on another (set allowPerReplicaReplayStore: true to accept that)" -}}
{{- end -}}
{{- $dpop := default (dict) (get $c "dpop") -}}
{{- if and $many (get $dpop "nonce") (not (get $dpop "nonce_secret")) -}}
{{- fail "more than one gateway replica with dpop.nonce needs dpop.nonce_secret (32+ characters, the same for all; e.g. ${DPOP_NONCE_SECRET} from a Secret through env): without it each replica signs nonces with its own random secret and refuses the others', and a client sent to another replica gets use_dpop_nonce again" -}}
{{- end -}}
{{- end -}}
{{- if eq (int $v.gateway.port) (int $v.gateway.adminPort) -}}
{{- fail (printf "gateway.port and gateway.adminPort are both %d: the proxy and admin listeners need their own ports" (int $v.gateway.port)) -}}
{{- end -}}
{{- if and $v.redis.enabled (not $v.redis.url) (not $v.redis.existingSecret) -}}
{{- fail "redis.enabled needs redis.url or redis.existingSecret" -}}
{{- end -}}
{{- if and (eq $v.mode "sidecar") (not $v.app.container) -}}
{{- fail "mode sidecar needs app.container (your application's container)" -}}
{{- end -}}
{{- if and (eq $v.mode "embedded") $v.networkPolicy.enabled (not $v.embedded.podSelector) -}}
{{- fail "mode embedded with networkPolicy.enabled needs embedded.podSelector (the labels of your Pods)" -}}
{{- end -}}
{{- if $v.podDisruptionBudget.enabled -}}
{{- if eq (kindIs "invalid" $v.podDisruptionBudget.minAvailable) (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable) -}}
{{- fail "podDisruptionBudget: set exactly one of minAvailable and maxUnavailable" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mission-gateway.terminationGracePeriodSeconds" -}}
{{- $grace := 10 -}}
{{- if hasKey (default (dict) .Values.config) "shutdown_grace_s" -}}
{{- $grace = .Values.config.shutdown_grace_s | ceil | int -}}
{{- end -}}
{{- add $grace (int .Values.gateway.preStopSleepSeconds) 5 -}}
{{- end -}}

{{/*
The gateway container, as one item of a Pod's `containers` list. Other charts include it beside
their own container:

  containers:
    - name: my-app
      ...
    {{- include "mission-gateway.sidecar.container" (index .Subcharts "mission-gateway") | nindent 4 }}
*/}}
{{- define "mission-gateway.sidecar.container" -}}
- name: mission-gateway
  image: {{ include "mission-gateway.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["--config", "/etc/mission-gateway/config/config.yaml"]
  ports:
    - name: mgw-http
      containerPort: {{ int .Values.gateway.port }}
      protocol: TCP
    - name: mgw-admin
      containerPort: {{ int .Values.gateway.adminPort }}
      protocol: TCP
  env:
    # The file args names, for the CLI's other verbs too: kubectl exec … -- mission-gateway check
    - name: MISSION_GATEWAY_CONFIG
      value: /etc/mission-gateway/config/config.yaml
    {{- if .Values.redis.enabled }}
    - name: MISSION_GATEWAY_REDIS_URL
      {{- if .Values.redis.existingSecret }}
      valueFrom:
        secretKeyRef:
          name: {{ .Values.redis.existingSecret }}
          key: {{ .Values.redis.existingSecretKey }}
      {{- else }}
      value: {{ .Values.redis.url | quote }}
      {{- end }}
    {{- end }}
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    httpGet: { path: /healthz, port: mgw-admin }
    {{- toYaml .Values.startupProbe | nindent 4 }}
  livenessProbe:
    httpGet: { path: /healthz, port: mgw-admin }
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet: { path: /readyz, port: mgw-admin }
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  {{- if gt (int .Values.gateway.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ int .Values.gateway.preStopSleepSeconds }}"]
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: mgw-config
      mountPath: /etc/mission-gateway/config
      readOnly: true
    {{- range .Values.keys }}
    - name: mgw-keys-{{ .name }}
      mountPath: /etc/mission-gateway/keys/{{ .name }}
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The volumes the gateway container mounts, as items of a Pod's `volumes` list. */}}
{{- define "mission-gateway.sidecar.volumes" -}}
- name: mgw-config
  configMap:
    name: {{ include "mission-gateway.configMapName" . }}
{{- range .Values.keys }}
- name: mgw-keys-{{ .name }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 288 # 0440: read-only for the owner and fsGroup
    {{- with .items }}
    items:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod annotations that roll the Pods when the gateway config changes. */}}
{{- define "mission-gateway.sidecar.podAnnotations" -}}
checksum/mission-gateway-config: {{ include "mission-gateway.configChecksum" . }}
{{- end -}}
