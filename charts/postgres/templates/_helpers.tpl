{{- define "postgres.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "postgres.fullname" -}}
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

{{- define "postgres.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postgres.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "postgres.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "postgres.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: database
app.kubernetes.io/part-of: energy-pipeline
{{- end -}}

{{/* The Secret of one role: include "postgres.secretName" (list . "app"). */}}
{{- define "postgres.secretName" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{- default (printf "%s-%s" (include "postgres.fullname" $root) $role) (get $root.Values.auth.existingSecrets $role) -}}
{{- end -}}

{{- define "postgres.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "postgres.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* Where the server finds its certificate and its pg_hba.conf with tls.enabled. */}}
{{- define "postgres.tlsDir" -}}/etc/postgresql/tls{{- end -}}
{{- define "postgres.hbaFile" -}}/etc/postgresql/hba/pg_hba.conf{{- end -}}

{{/* The backup CronJob's pods: not the server's selector, so its Service never picks them. */}}
{{- define "postgres.backupLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "postgres.name" . }}-backup
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: backup
app.kubernetes.io/part-of: energy-pipeline
{{- end -}}
