{{/* Names. Every object is "<release>-krakenctl-<role>" unless the release name already says krakenctl. */}}
{{- define "krakenctl.fullname" -}}
{{- if contains "krakenctl" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-krakenctl" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "krakenctl.name" -}}
{{- printf "%s-%s" (include "krakenctl.fullname" .root) .role -}}
{{- end -}}

{{- define "krakenctl.labels" -}}
app.kubernetes.io/name: krakenctl
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "krakenctl.selectorLabels" -}}
app.kubernetes.io/name: krakenctl
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "krakenctl.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The headless Service's DNS name: every ready pod's address, for dns:/// membership. */}}
{{- define "krakenctl.dns" -}}
{{- printf "dns:///%s.%s.svc.%s:%v" (include "krakenctl.name" (dict "root" .root "role" (printf "%s-headless" .role))) .root.Release.Namespace .root.Values.clusterDomain .port -}}
{{- end -}}

{{/* This pod's own stable DNS name and port in a StatefulSet (POD_NAME.<headless>.<ns>.svc):
unlike the pod IP it survives a restart, which is what a Raft member's recorded address must do. */}}
{{- define "krakenctl.podFQDN" -}}
{{- printf "${POD_NAME}.%s.%s.svc.%s:%v" (include "krakenctl.name" (dict "root" .root "role" (printf "%s-headless" .role))) .root.Release.Namespace .root.Values.clusterDomain .port -}}
{{- end -}}

{{/*
A role's members as a YAML flow-list body: without TLS, the headless Service's dns:/// name
(re-resolved, so scaling needs no config change); with TLS, every pod's stable name
(<role>-<i>.<headless>.<ns>.svc.<domain>:<port>, from replicas), because the certificates name
pods by the headless Service's wildcard and a pod IP from a DNS answer is named by none.
Arguments: root, role, port, replicas.
*/}}
{{- define "krakenctl.members" -}}
{{- if .root.Values.tls.enabled -}}
{{- $names := list -}}
{{- $pod := include "krakenctl.name" (dict "root" .root "role" .role) -}}
{{- $hl := include "krakenctl.name" (dict "root" .root "role" (printf "%s-headless" .role)) -}}
{{- range $i := until (int .replicas) -}}
{{- $names = append $names (printf "%s-%d.%s.%s.svc.%s:%v" $pod $i $hl $.root.Release.Namespace $.root.Values.clusterDomain $.port | quote) -}}
{{- end -}}
{{- join ", " $names -}}
{{- else -}}
{{- include "krakenctl.dns" . | quote -}}
{{- end -}}
{{- end -}}

{{/* The ClusterIP Service's DNS name and port, for clients that need one address. */}}
{{- define "krakenctl.svc" -}}
{{- printf "%s.%s.svc.%s:%v" (include "krakenctl.name" (dict "root" .root "role" .role)) .root.Release.Namespace .root.Values.clusterDomain .port -}}
{{- end -}}

{{/* The tls: section of ROLE's config, or nothing. */}}
{{- define "krakenctl.tlsConfig" -}}
{{- if .root.Values.tls.enabled }}
tls:
  {{- if eq .role "build-index" }}
  cert_file: /etc/krakenctl/tls/${POD_NAME}/tls.crt
  key_file: /etc/krakenctl/tls/${POD_NAME}/tls.key
  ca_file: /etc/krakenctl/tls/${POD_NAME}/ca.crt
  {{- else }}
  cert_file: /etc/krakenctl/tls/tls.crt
  key_file: /etc/krakenctl/tls/tls.key
  ca_file: /etc/krakenctl/tls/ca.crt
  {{- end }}
{{- end }}
{{- end -}}

{{/* The Secret name(s) holding ROLE's certificate; fails when TLS from existing Secrets lacks one. */}}
{{- define "krakenctl.tlsSecret" -}}
{{- $v := .root.Values.tls -}}
{{- $key := .role | replace "build-index" "buildIndex" -}}
{{- if eq $v.mode "certManager" -}}
{{- printf "%s-tls" (include "krakenctl.name" .) -}}
{{- else -}}
{{- required (printf "tls.existingSecrets.%s: the name of the Secret with the %s certificate is required when tls.enabled (or use tls.mode certManager)" $key .role) (get $v.existingSecrets $key) -}}
{{- end -}}
{{- end -}}

{{/* Volumes and mounts of ROLE's TLS material. */}}
{{- define "krakenctl.tlsVolumes" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  {{- if eq .role "build-index" }}
  projected:
    sources:
      {{- $base := include "krakenctl.tlsSecret" . }}
      {{- range $i := until (int .root.Values.buildIndex.replicas) }}
      - secret:
          name: {{ printf "%s-%d" $base $i }}
          items:
            - {key: tls.crt, path: {{ printf "%s-%d" (include "krakenctl.name" (dict "root" $.root "role" "build-index")) $i }}/tls.crt}
            - {key: tls.key, path: {{ printf "%s-%d" (include "krakenctl.name" (dict "root" $.root "role" "build-index")) $i }}/tls.key}
            - {key: ca.crt, path: {{ printf "%s-%d" (include "krakenctl.name" (dict "root" $.root "role" "build-index")) $i }}/ca.crt}
      {{- end }}
  {{- else }}
  secret:
    secretName: {{ include "krakenctl.tlsSecret" . }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "krakenctl.tlsMounts" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/krakenctl/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "krakenctl.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{/* The pod's own addresses and name, which the configs reference as ${POD_IP}, ${HOST_IP}, ${POD_NAME}. */}}
{{- define "krakenctl.podEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: HOST_IP
  valueFrom: {fieldRef: {fieldPath: status.hostIP}}
{{- end -}}

{{/*
Backends. A route's kind keys are passed through, except the *_secret entries: their keys come
from a Secret, as environment variables (names) or mounted files (passwords, keys, tokens).
Arguments: root, role, backends.
*/}}
{{- define "krakenctl.backendsConfig" -}}
{{- range $i, $b := .backends }}
{{- $kinds := list }}
{{- range $k := list "fs" "s3" "http" "registry" }}{{ if hasKey $b $k }}{{ $kinds = append $kinds $k }}{{ end }}{{ end }}
{{- if ne (len $kinds) 1 }}
{{- fail (printf "%s.backends[%d]: set exactly one of fs, s3, http, registry (got %v)" ($.role | replace "build-index" "buildIndex") $i $kinds) }}
{{- end }}
{{- $kind := first $kinds }}
{{- $c := deepCopy (get $b $kind) }}
{{- $dir := printf "/etc/krakenctl/secrets/backend-%d" $i }}
{{- $env := printf "KRAKENCTL_BACKEND_%d" $i }}
{{- if eq $kind "s3" }}
{{- with $c.credentials_secret }}
{{- $_ := set $c "access_key_id" (printf "${%s_ACCESS_KEY_ID}" $env) }}
{{- $_ := set $c "secret_access_key_file" (printf "%s/%s" $dir (default "secret_access_key" .secret_access_key_key)) }}
{{- if .session_token_key }}{{ $_ := set $c "session_token_file" (printf "%s/%s" $dir .session_token_key) }}{{ end }}
{{- end }}
{{- $_ := unset $c "credentials_secret" }}
{{- else if eq $kind "http" }}
{{- with $c.basic_auth_secret }}
{{- $_ := set $c "username" (printf "${%s_USERNAME}" $env) }}
{{- $_ := set $c "password_file" (printf "%s/%s" $dir (default "password" .password_key)) }}
{{- end }}
{{- $_ := unset $c "basic_auth_secret" }}
{{- else if eq $kind "registry" }}
{{- with $c.credentials_secret }}
{{- $_ := set $c "username" (printf "${%s_USERNAME}" $env) }}
{{- $_ := set $c "password_file" (printf "%s/%s" $dir (default "password" .password_key)) }}
{{- end }}
{{- with $c.token_secret }}
{{- $_ := set $c "token_file" (printf "%s/%s" $dir (default "token" .key)) }}
{{- end }}
{{- $_ := unset $c "credentials_secret" }}
{{- $_ := unset $c "token_secret" }}
{{- end }}
- namespace: {{ $b.namespace | quote }}
  {{- with $b.name }}
  name: {{ . | quote }}
  {{- end }}
  {{ $kind }}:
    {{- toYaml $c | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "krakenctl.backendEnv" -}}
{{- range $i, $b := .backends }}
{{- range $k := list "s3" "http" "registry" }}
{{- if hasKey $b $k }}
{{- $c := get $b $k }}
{{- with $c.credentials_secret }}
{{- if eq $k "s3" }}
- name: {{ printf "KRAKENCTL_BACKEND_%d_ACCESS_KEY_ID" $i }}
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ default "access_key_id" .access_key_id_key | quote }}}}
{{- else }}
- name: {{ printf "KRAKENCTL_BACKEND_%d_USERNAME" $i }}
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ default "username" .username_key | quote }}}}
{{- end }}
{{- end }}
{{- with $c.basic_auth_secret }}
- name: {{ printf "KRAKENCTL_BACKEND_%d_USERNAME" $i }}
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ default "username" .username_key | quote }}}}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "krakenctl.backendVolumes" -}}
{{- range $i, $b := .backends }}
{{- range $k := list "s3" "http" "registry" }}
{{- if hasKey $b $k }}
{{- $c := get $b $k }}
{{- $secrets := list }}
{{- with $c.credentials_secret }}{{ $secrets = append $secrets .name }}{{ end }}
{{- with $c.basic_auth_secret }}{{ $secrets = append $secrets .name }}{{ end }}
{{- with $c.token_secret }}{{ $secrets = append $secrets .name }}{{ end }}
{{- if $secrets }}
- name: {{ printf "backend-%d" $i }}
  projected:
    sources:
      {{- range $s := $secrets | uniq }}
      - secret: {name: {{ $s | quote }}}
      {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "krakenctl.backendMounts" -}}
{{- range $i, $b := .backends }}
{{- range $k := list "s3" "http" "registry" }}
{{- if hasKey $b $k }}
{{- $c := get $b $k }}
{{- if or $c.credentials_secret $c.basic_auth_secret $c.token_secret }}
- name: {{ printf "backend-%d" $i }}
  mountPath: {{ printf "/etc/krakenctl/secrets/backend-%d" $i }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Probes on the admin listener: /health (the process is up) and /readyz (it can do its job). */}}
{{- define "krakenctl.probes" -}}
startupProbe:
  httpGet: {path: /health, port: admin, scheme: {{ include "krakenctl.scheme" .root }}}
  periodSeconds: 2
  failureThreshold: 150
livenessProbe:
  httpGet: {path: /health, port: admin, scheme: {{ include "krakenctl.scheme" .root }}}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: admin, scheme: {{ include "krakenctl.scheme" .root }}}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* Spreads a role's pods over nodes: preferred, so a small cluster still schedules them all. */}}
{{- define "krakenctl.antiAffinity" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "krakenctl.selectorLabels" . | nindent 14 }}
{{- end -}}

{{- define "krakenctl.podCommon" -}}
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
