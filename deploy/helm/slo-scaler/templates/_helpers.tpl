{{/* Chart name, truncated to a DNS label. */}}
{{- define "slo-scaler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: release name, plus the chart name unless the release already holds it. */}}
{{- define "slo-scaler.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the scaler's pods. */}}
{{- define "slo-scaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slo-scaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "slo-scaler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "slo-scaler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: keda-external-scaler
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "slo-scaler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slo-scaler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "slo-scaler.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Secret holding the gRPC server certificate. */}}
{{- define "slo-scaler.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "slo-scaler.fullname" .) }}
{{- end }}
{{- end }}

{{/* In-cluster DNS name of the Service. */}}
{{- define "slo-scaler.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "slo-scaler.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Label matchers that pick this scaler's series in alert rules. */}}
{{- define "slo-scaler.ruleSelector" -}}
{{- default (printf "job=%q" (include "slo-scaler.fullname" .)) .Values.prometheusRule.selector }}
{{- end }}

{{/*
Backend flags, volumes and mounts. Called with (dict "kind" "prometheus" "backends" LIST);
"part" picks what to emit: "args", "volumes" or "mounts".
A header with valueFrom.secretKeyRef is a mounted file (`--<kind>-header-file`): secrets never
reach the container's args or env.
Files are mounted read-only under /etc/slo-scaler/<kind>/<name>/.
*/}}
{{- define "slo-scaler.backend" -}}
{{- $kind := .kind }}
{{- $part := .part }}
{{- range $i, $b := .backends }}
{{- $dir := printf "/etc/slo-scaler/%s/%s" $kind $b.name }}
{{- $vol := printf "%s-%d" $kind $i }}
{{- if eq $part "args" }}
- {{ printf "--%s=%s=%s" $kind $b.name $b.url | quote }}
{{- with $b.bearerTokenSecret }}
- {{ printf "--%s-bearer-token-file=%s=%s/bearer-token/token" $kind $b.name $dir | quote }}
{{- end }}
{{- with $b.basicAuthSecret }}
- {{ printf "--%s-basic-auth-file=%s=%s/basic-auth/auth" $kind $b.name $dir | quote }}
{{- end }}
{{- with $b.ca }}
- {{ printf "--%s-ca-file=%s=%s/ca/ca.crt" $kind $b.name $dir | quote }}
{{- end }}
{{- with $b.tenant }}
- {{ printf "--%s-tenant=%s=%s" $kind $b.name . | quote }}
{{- end }}
{{- with $b.sigv4Region }}
- {{ printf "--%s-sigv4=%s=%s" $kind $b.name . | quote }}
{{- end }}
{{- with $b.api }}
- {{ printf "--%s-api=%s=%s" $kind $b.name . | quote }}
{{- end }}
{{- range $j, $h := $b.headers }}
{{- if $h.valueFrom }}
- {{ printf "--%s-header-file=%s=%s:%s/header-%d/value" $kind $b.name $h.name $dir $j | quote }}
{{- else }}
- {{ printf "--%s-header=%s=%s:%s" $kind $b.name $h.name $h.value | quote }}
{{- end }}
{{- end }}
{{- else if eq $part "volumes" }}
{{- range $j, $h := $b.headers }}
{{- with $h.valueFrom }}
- name: {{ $vol }}-header-{{ $j }}
  secret:
    secretName: {{ .secretKeyRef.name }}
    defaultMode: 0440
    items:
      - key: {{ .secretKeyRef.key }}
        path: value
{{- end }}
{{- end }}
{{- with $b.bearerTokenSecret }}
- name: {{ $vol }}-bearer-token
  secret:
    secretName: {{ .name }}
    defaultMode: 0440
    items:
      - key: {{ .key | default "token" }}
        path: token
{{- end }}
{{- with $b.basicAuthSecret }}
- name: {{ $vol }}-basic-auth
  secret:
    secretName: {{ .name }}
    defaultMode: 0440
    items:
      - key: {{ .key | default "auth" }}
        path: auth
{{- end }}
{{- with $b.ca }}
- name: {{ $vol }}-ca
  {{- if .secret }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0444
  {{- else }}
  configMap:
    name: {{ .configMap }}
    defaultMode: 0444
  {{- end }}
    items:
      - key: {{ .key | default "ca.crt" }}
        path: ca.crt
{{- end }}
{{- else if eq $part "mounts" }}
{{- range $j, $h := $b.headers }}
{{- if $h.valueFrom }}
- name: {{ $vol }}-header-{{ $j }}
  mountPath: {{ $dir }}/header-{{ $j }}
  readOnly: true
{{- end }}
{{- end }}
{{- if $b.bearerTokenSecret }}
- name: {{ $vol }}-bearer-token
  mountPath: {{ $dir }}/bearer-token
  readOnly: true
{{- end }}
{{- if $b.basicAuthSecret }}
- name: {{ $vol }}-basic-auth
  mountPath: {{ $dir }}/basic-auth
  readOnly: true
{{- end }}
{{- if $b.ca }}
- name: {{ $vol }}-ca
  mountPath: {{ $dir }}/ca
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The source of trace triggers that name none, as the binary picks it: the flag when set,
else prometheus when one is configured, else the embedded store. */}}
{{- define "slo-scaler.defaultSource" -}}
{{- if .Values.config.defaultSource }}
{{- .Values.config.defaultSource }}
{{- else if .Values.prometheus }}
{{- "prometheus" }}
{{- else }}
{{- "otlp" }}
{{- end }}
{{- end }}

{{/* The replica count: replicaCount, or 1 when the embedded store is the default source, else 2. */}}
{{- define "slo-scaler.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount }}
{{- if eq (include "slo-scaler.defaultSource" .) "otlp" }}1{{ else }}2{{ end }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
"true" when the embedded OTLP receiver runs: otlp.enabled, and either every replica receives every
span (otlp.fanOut) or there is one replica. With several replicas and no fan-out, KEDA's gRPC
client spreads its calls over them (keda pkg/scalers/external_scaler.go,
getClientForConnectionPool: grpc.WithDefaultServiceConfig with
`{"loadBalancingConfig": [{"round_robin":{}}]}`), and each replica's store would hold only the
spans sent to it:
a `source: otlp` trigger would read a share. The receiver is then off (`--no-otlp`), and such a
trigger is refused with an error that says so. Empty otherwise.
*/}}
{{- define "slo-scaler.otlpReceiver" -}}
{{- if and .Values.otlp.enabled (or .Values.otlp.fanOut (eq (int (include "slo-scaler.replicas" .)) 1)) }}true{{ end }}
{{- end }}

{{/* Stable address of replica N's OTLP/gRPC port (otlp.fanOut: StatefulSet pods behind the headless Service). */}}
{{- define "slo-scaler.replicaOtlpEndpoint" -}}
{{- $ctx := index . 0 }}
{{- $fullname := include "slo-scaler.fullname" $ctx }}
{{- printf "%s-%d.%s.%s.svc.%s:%d" $fullname (index . 1) $fullname $ctx.Release.Namespace $ctx.Values.clusterDomain (int64 $ctx.Values.ports.otlpGrpc) }}
{{- end }}

{{/* The OpenTelemetry Collector exporters that send every span to every replica. */}}
{{- define "slo-scaler.collectorSnippet" -}}
{{- $n := int (include "slo-scaler.replicas" .) -}}
exporters:
{{- range $i := until $n }}
  otlp/slo-scaler-{{ $i }}:
    endpoint: {{ include "slo-scaler.replicaOtlpEndpoint" (list $ $i) }}
    {{- if $.Values.otlp.tls.enabled }}
    tls: {ca_file: /etc/otelcol/slo-scaler/ca.crt{{ if $.Values.otlp.tls.clientAuth }}, cert_file: /etc/otelcol/slo-scaler/tls.crt, key_file: /etc/otelcol/slo-scaler/tls.key{{ end }}}
    {{- else }}
    tls: {insecure: true}
    {{- end }}
{{- end }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [{{ range $i := until $n }}{{ if $i }}, {{ end }}otlp/slo-scaler-{{ $i }}{{ end }}]
{{- end }}
