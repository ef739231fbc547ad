{{/* Names and labels. */}}
{{- define "ferroturn.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferroturn.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferroturn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferroturn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ferroturn.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ferroturn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ferroturn.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secret" (include "ferroturn.fullname" .)) -}}
{{- end -}}

{{- define "ferroturn.redisName" -}}
{{- printf "%s-redis" (include "ferroturn.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
A value kept across upgrades: the one given, else the one already in the chart's Secret
(read back from the cluster), else a new random one. `helm template` cannot read the
cluster and renders a random value. Called once per render (in secret.yaml).
*/}}
{{- define "ferroturn.persistent" -}}
{{- $ctx := index . 0 -}}
{{- $given := index . 1 -}}
{{- $key := index . 2 -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace (include "ferroturn.secretName" $ctx) -}}
{{- if and $existing (hasKey ($existing.data | default dict) $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Checks on values that the schema cannot express. */}}
{{- define "ferroturn.validate" -}}
{{- if regexMatch "(?m)^[ \\t]*\\[" .Values.secretConfig -}}
{{- fail "secretConfig: top-level keys only (no [tables]); it is read before config, and a table would swallow the keys after it. Put [[api-key]] tables in config." -}}
{{- end -}}
{{- if regexMatch "(?m)^[ \\t]*(nonce-secret|redis)[ \\t]*=" .Values.secretConfig -}}
{{- fail "secretConfig: nonce-secret and redis come from the values nonceSecret and redis.url/redis.deploy" -}}
{{- end -}}
{{- if and .Values.ports.tls (not .Values.tls.secretName) -}}
{{- fail "ports.tls is set: tls.secretName must name a kubernetes.io/tls Secret" -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9._~-]*$" (.Values.redis.password | toString)) -}}
{{- fail "redis.password: letters, digits and . _ ~ - only (it goes into the Redis URL)" -}}
{{- end -}}
{{- if gt (int .Values.ports.minRelay) (int .Values.ports.maxRelay) -}}
{{- fail "ports.minRelay must not be above ports.maxRelay" -}}
{{- end -}}
{{- end -}}
