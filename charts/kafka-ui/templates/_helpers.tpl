{{- define "kafka-ui.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kafka-ui.fullname" -}}
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

{{- define "kafka-ui.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-ui.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kafka-ui.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kafka-ui.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: kafka-ui
app.kubernetes.io/part-of: energy-pipeline
{{- end -}}

{{- define "kafka-ui.loginSecretName" -}}
{{- default (printf "%s-login" (include "kafka-ui.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* The application's context path: the Ingress path, without a trailing slash. */}}
{{- define "kafka-ui.contextPath" -}}
{{- $path := .Values.ingress.path -}}
{{- if not (regexMatch "^(/[-A-Za-z0-9._~]+)+$" $path) -}}
{{- fail (printf "ingress.path must be a sub-path such as /kafka-ui (segments of letters, digits, - . _ ~; no trailing slash), not %q: it is the UI's context path too" $path) -}}
{{- end -}}
{{- $path -}}
{{- end -}}

{{- define "kafka-ui.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end -}}

{{- define "kafka-ui.tls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "kafka-ui.caFile" -}}/etc/kafka-ui/kafka-ca/ca.crt{{- end -}}

{{/* The distinct ports of kafka.bootstrapServers (host:port,host:port), for the egress rule. */}}
{{- define "kafka-ui.kafkaPorts" -}}
{{- $ports := list -}}
{{- range splitList "," (tpl .Values.kafka.bootstrapServers .) -}}
{{- $port := regexFind ":[0-9]+$" (trim .) | trimPrefix ":" -}}
{{- if not $port -}}
{{- fail (printf "kafka.bootstrapServers: %q has no port (host:port)" (trim .)) -}}
{{- end -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}
