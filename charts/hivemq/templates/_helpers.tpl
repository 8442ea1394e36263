{{- define "hivemq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hivemq.fullname" -}}
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

{{- define "hivemq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hivemq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hivemq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hivemq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: mqtt-broker
app.kubernetes.io/part-of: energy-pipeline
{{- end -}}

{{/* The secure mode and what it turns on: our auth extension, TLS, no plain listener. */}}
{{- define "hivemq.tls" -}}
{{- if or .Values.secure .Values.tls.enabled -}}true{{- end -}}
{{- end -}}

{{- define "hivemq.authExtension" -}}
{{- if or .Values.secure .Values.auth.extension.enabled -}}true{{- end -}}
{{- end -}}

{{- define "hivemq.plainListener" -}}
{{- if not .Values.secure -}}true{{- end -}}
{{- end -}}

{{- define "hivemq.allowAll" -}}
{{- if and .Values.auth.allowAllClients (not (include "hivemq.authExtension" .)) (not .Values.auth.fileRbac.enabled) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* The port the probes knock on: the plain listener if there is one, else the TLS one. */}}
{{- define "hivemq.probePort" -}}
{{- if include "hivemq.plainListener" . -}}mqtt{{- else -}}mqtts{{- end -}}
{{- end -}}
