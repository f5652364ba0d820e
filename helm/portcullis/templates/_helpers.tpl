{{- define "portcullis.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portcullis.labels" -}}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "portcullis.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The policy as Portcullis reads it: the user's policy plus the listeners and secret paths. */}}
{{- define "portcullis.policy" -}}
{{- $policy := deepCopy .Values.policy -}}
{{- $grpc := printf "0.0.0.0:%d" (int .Values.ports.grpc) -}}
{{- if eq .Values.mode "sidecar" -}}
{{- $grpc = "unix:/var/run/portcullis/authz.sock" -}}
{{- end -}}
{{- $listen := dict "grpc" $grpc "health" (printf "0.0.0.0:%d" (int .Values.ports.health)) -}}
{{- if .Values.admin.enabled -}}
{{- $_ := set $listen "admin" (printf "0.0.0.0:%d" (int .Values.ports.admin)) -}}
{{- $_ := set $policy "admin" (dict "token_file" "/etc/portcullis/admin/token") -}}
{{- end -}}
{{- $_ := set $policy "listen" $listen -}}
{{- if .Values.redis.passwordSecret.name -}}
{{- $state := deepCopy (default dict $policy.state) -}}
{{- $_ := set $state "password_file" "/etc/portcullis/redis/password" -}}
{{- $_ := set $policy "state" $state -}}
{{- end -}}
{{- toYaml $policy -}}
{{- end -}}

{{/* Refuses value combinations the schema cannot express. */}}
{{- define "portcullis.checks" -}}
{{- $backend := "memory" -}}
{{- if and .Values.policy.state .Values.policy.state.backend -}}
{{- $backend = .Values.policy.state.backend -}}
{{- end -}}
{{- if and (eq $backend "memory") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) -}}
{{- fail "replicaCount > 1 or autoscaling needs policy.state.backend: redis: with the memory backend each replica would keep its own revocations and blocks" -}}
{{- end -}}
{{- if and .Values.admin.enabled (not .Values.admin.tokenSecret.name) -}}
{{- fail "admin.enabled needs admin.tokenSecret.name (the admin API always requires a token)" -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") (not .Values.sidecar.app.image) -}}
{{- fail "mode: sidecar needs sidecar.app.image" -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") .Values.autoscaling.enabled (eq $backend "memory") -}}
{{- fail "autoscaling in sidecar mode needs policy.state.backend: redis" -}}
{{- end -}}
{{- end -}}

{{/* The Portcullis container, shared by both modes. */}}
{{- define "portcullis.container" -}}
- name: portcullis
  image: {{ include "portcullis.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["serve", "--config", "/etc/portcullis/policy/policy.yaml"]
  ports:
    {{- if ne .Values.mode "sidecar" }}
    - { name: grpc, containerPort: {{ .Values.ports.grpc }}, protocol: TCP }
    {{- end }}
    - { name: health, containerPort: {{ .Values.ports.health }}, protocol: TCP }
    {{- if .Values.admin.enabled }}
    - { name: admin, containerPort: {{ .Values.ports.admin }}, protocol: TCP }
    {{- end }}
  livenessProbe:
    httpGet: { path: /livez, port: health }
    periodSeconds: 10
  readinessProbe:
    httpGet: { path: /readyz, port: health }
    periodSeconds: 2
    failureThreshold: 2
  startupProbe:
    httpGet: { path: /livez, port: health }
    periodSeconds: 1
    failureThreshold: 30
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    capabilities: { drop: [ALL] }
  volumeMounts:
    - { name: policy, mountPath: /etc/portcullis/policy, readOnly: true }
    {{- if .Values.admin.enabled }}
    - { name: admin-token, mountPath: /etc/portcullis/admin, readOnly: true }
    {{- end }}
    {{- if .Values.redis.passwordSecret.name }}
    - { name: redis-password, mountPath: /etc/portcullis/redis, readOnly: true }
    {{- end }}
    {{- range .Values.extraSecretMounts }}
    - { name: {{ .name }}, mountPath: {{ .mountPath }}, readOnly: true }
    {{- end }}
    {{- if eq .Values.mode "sidecar" }}
    - { name: authz-socket, mountPath: /var/run/portcullis }
    {{- end }}
{{- end -}}

{{- define "portcullis.volumes" -}}
- name: policy
  configMap: { name: {{ include "portcullis.fullname" . }}-policy }
{{- if .Values.admin.enabled }}
- name: admin-token
  secret:
    secretName: {{ .Values.admin.tokenSecret.name }}
    items: [ { key: {{ .Values.admin.tokenSecret.key }}, path: token } ]
{{- end }}
{{- if .Values.redis.passwordSecret.name }}
- name: redis-password
  secret:
    secretName: {{ .Values.redis.passwordSecret.name }}
    items: [ { key: {{ .Values.redis.passwordSecret.key }}, path: password } ]
{{- end }}
{{- range .Values.extraSecretMounts }}
- name: {{ .name }}
  secret: { secretName: {{ .secretName }} }
{{- end }}
{{- if eq .Values.mode "sidecar" }}
- name: authz-socket
  emptyDir: {}
- name: envoy-config
  configMap: { name: {{ include "portcullis.fullname" . }}-envoy }
{{- end }}
{{- end -}}

{{- define "portcullis.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  runAsNonRoot: true
  seccompProfile: { type: RuntimeDefault }
  fsGroup: 65532
{{- end -}}
