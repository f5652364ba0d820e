{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
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
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The memory backend journaling to the chart's state volume. */}}
{{- define "portcullis.journaled" -}}
{{- $state := default dict .Values.policy.state -}}
{{- if and .Values.stateVolume.existingClaim (eq (default "memory" $state.backend) "memory") (not $state.dir) -}}true{{- end -}}
{{- end -}}

{{- define "portcullis.replicated" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{- define "portcullis.terminationGrace" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add .Values.shutdown.drainDelaySeconds .Values.shutdown.drainTimeoutSeconds 5 -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* The policy as Portcullis reads it: the user's policy plus the listeners, drain and secret paths. */}}
{{- define "portcullis.policy" -}}
{{- $policy := omit (deepCopy .Values.policy) "existingConfigMap" -}}
{{- $host := .Values.listenAddress -}}
{{- $grpc := printf "%s:%d" $host (int .Values.ports.grpc) -}}
{{- $listen := dict "health" (printf "%s:%d" $host (int .Values.ports.health)) -}}
{{- if eq .Values.mode "sidecar" -}}
{{- $grpc = "unix:/var/run/portcullis/authz.sock" -}}
{{- $_ := set $listen "socket" (dict "mode" "0660" "group" (printf "%d" (int .Values.sidecar.socketGroup))) -}}
{{- end -}}
{{- $_ := set $listen "grpc" $grpc -}}
{{- if .Values.admin.enabled -}}
{{- $_ := set $listen "admin" (printf "%s:%d" $host (int .Values.ports.admin)) -}}
{{- $_ := set $policy "admin" (dict "token_file" "/etc/portcullis/admin/token") -}}
{{- end -}}
{{- $_ := set $policy "listen" (merge $listen (default dict $policy.listen)) -}}
{{- $shutdown := dict "drain_delay" (printf "%ds" (int .Values.shutdown.drainDelaySeconds)) "drain_timeout" (printf "%ds" (int .Values.shutdown.drainTimeoutSeconds)) -}}
{{- $_ := set $policy "shutdown" $shutdown -}}
{{- if .Values.fragments.configMaps -}}
{{- $_ := set $policy "include" (append (default list $policy.include) "/etc/portcullis/fragments/*/*.yaml") -}}
{{- end -}}
{{- if include "portcullis.journaled" . -}}
{{- $state := deepCopy (default dict $policy.state) -}}
{{- $_ := set $state "dir" .Values.stateVolume.mountPath -}}
{{- $_ := set $policy "state" $state -}}
{{- end -}}
{{- if .Values.redis.passwordSecret.name -}}
{{- $state := deepCopy (default dict $policy.state) -}}
{{- $_ := set $state "password_file" "/etc/portcullis/redis/password" -}}
{{- $_ := set $policy "state" $state -}}
{{- end -}}
{{- toYaml $policy -}}
{{- end -}}

{{/* The policy sections Portcullis applies only at start (README "Hot reload"): a change to one rolls the pods even without rollOnPolicyChange. */}}
{{- define "portcullis.restartOnly" -}}
{{- $policy := include "portcullis.policy" . | fromYaml -}}
{{- pick $policy "listen" "admin" "state" "telemetry" "shutdown" "cache" "limits" "dev" | toYaml -}}
{{- end -}}

{{/* Refuses value combinations the schema cannot express. */}}
{{- define "portcullis.checks" -}}
{{- $backend := "memory" -}}
{{- if and .Values.policy.state .Values.policy.state.backend -}}
{{- $backend = .Values.policy.state.backend -}}
{{- end -}}
{{- $shared := list -}}
{{- if .Values.admin.enabled -}}{{- $shared = append $shared "the admin API (revocations, blocks, members, API keys)" -}}{{- end -}}
{{- if and .Values.policy.ip .Values.policy.ip.auto_block -}}{{- $shared = append $shared "ip.auto_block" -}}{{- end -}}
{{- if .Values.policy.sessions -}}{{- $shared = append $shared "sessions" -}}{{- end -}}
{{- if and (eq $backend "memory") (include "portcullis.replicated" .) $shared (not .Values.acknowledgePerReplicaState) -}}
{{- fail (printf "replicaCount > 1 or autoscaling with policy.state.backend: memory: %s would be per replica. Use policy.state.backend: redis, or set acknowledgePerReplicaState: true" (join ", " $shared)) -}}
{{- end -}}
{{- if and .Values.admin.enabled (not .Values.admin.tokenSecret.name) -}}
{{- fail "admin.enabled needs admin.tokenSecret.name (the admin API always requires a token)" -}}
{{- end -}}
{{- $state := default dict .Values.policy.state -}}
{{- if and (eq $backend "memory") $shared (not $state.dir) (not $state.acknowledge_ephemeral_state) (not (include "portcullis.journaled" .)) -}}
{{- fail (printf "policy.state.backend: memory forgets %s when a pod is replaced (a rollout, an eviction): set stateVolume.existingClaim (a PersistentVolumeClaim for the state journal), use policy.state.backend: redis, or set policy.state.acknowledge_ephemeral_state: true" (join ", " $shared)) -}}
{{- end -}}
{{- if and (include "portcullis.journaled" .) (include "portcullis.replicated" .) -}}
{{- fail "stateVolume.existingClaim holds one replica's journal: run one replica (no autoscaling), or use policy.state.backend: redis" -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") (not .Values.sidecar.app.image) -}}
{{- fail "mode: sidecar needs sidecar.app.image" -}}
{{- end -}}
{{- if lt (int (include "portcullis.terminationGrace" .)) (int (add .Values.shutdown.drainDelaySeconds .Values.shutdown.drainTimeoutSeconds)) -}}
{{- fail "terminationGracePeriodSeconds must be at least shutdown.drainDelaySeconds + shutdown.drainTimeoutSeconds" -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.minAvailable .Values.podDisruptionBudget.maxUnavailable -}}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" -}}
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
  {{- with .Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  livenessProbe:
    {{- if .Values.probes.liveness }}
    {{- toYaml .Values.probes.liveness | nindent 4 }}
    {{- else }}
    httpGet: { path: /livez, port: health }
    periodSeconds: 10
    {{- end }}
  readinessProbe:
    {{- if .Values.probes.readiness }}
    {{- toYaml .Values.probes.readiness | nindent 4 }}
    {{- else }}
    httpGet: { path: /readyz, port: health }
    periodSeconds: 2
    failureThreshold: 2
    {{- end }}
  startupProbe:
    {{- if .Values.probes.startup }}
    {{- toYaml .Values.probes.startup | nindent 4 }}
    {{- else }}
    httpGet: { path: /livez, port: health }
    periodSeconds: 1
    failureThreshold: 30
    {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    {{- include "portcullis.policyMounts" . | nindent 4 }}
    {{- if eq .Values.mode "sidecar" }}
    - { name: authz-socket, mountPath: /var/run/portcullis }
    {{- end }}
    {{- if include "portcullis.journaled" . }}
    - { name: state, mountPath: {{ .Values.stateVolume.mountPath }} }
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* What the policy reads: the policy itself and the files it names (shared by the pod and
the policy-check hook Job). */}}
{{- define "portcullis.policyMounts" -}}
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
{{- range $i, $name := .Values.fragments.configMaps }}
- { name: fragment-{{ $i }}, mountPath: /etc/portcullis/fragments/{{ $name }}, readOnly: true }
{{- end }}
{{- end -}}

{{/* The volumes behind portcullis.policyMounts; .policyConfigMap names the policy's. */}}
{{- define "portcullis.policyVolumes" -}}
{{- $root := .root -}}
- name: policy
  configMap: { name: {{ .policyConfigMap }} }
{{- with $root }}
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
{{- range $i, $name := .Values.fragments.configMaps }}
- name: fragment-{{ $i }}
  configMap: { name: {{ $name }} }
{{- end }}
{{- end }}
{{- end -}}

{{- define "portcullis.volumes" -}}
{{ include "portcullis.policyVolumes" (dict "root" . "policyConfigMap" (.Values.policy.existingConfigMap | default (printf "%s-policy" (include "portcullis.fullname" .)))) }}
{{- if eq .Values.mode "sidecar" }}
- name: authz-socket
  emptyDir: {}
- name: envoy-config
  configMap: { name: {{ include "portcullis.fullname" . }}-envoy }
{{- end }}
{{- if include "portcullis.journaled" . }}
- name: state
  persistentVolumeClaim: { claimName: {{ .Values.stateVolume.existingClaim }} }
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "portcullis.podSpecCommon" -}}
serviceAccountName: {{ include "portcullis.serviceAccountName" . }}
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
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
automountServiceAccountToken: false
{{- $psc := deepCopy (default dict .Values.podSecurityContext) }}
{{- if eq .Values.mode "sidecar" }}
{{- $_ := set $psc "supplementalGroups" (append (default list $psc.supplementalGroups) (int .Values.sidecar.socketGroup)) }}
{{- end }}
{{- with $psc }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
