{{- define "grafana.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "grafana.fullname" -}}
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

{{- define "grafana.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grafana.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "grafana.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "grafana.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: dashboards
app.kubernetes.io/part-of: energy-pipeline
{{- end -}}

{{- define "grafana.adminSecretName" -}}
{{- default (printf "%s-admin" (include "grafana.fullname" .)) .Values.admin.existingSecret -}}
{{- end -}}

{{- define "grafana.databaseSecretName" -}}
{{- required "database.existingSecret is required (the Secret holding the reader password)" (tpl .Values.database.existingSecret .) -}}
{{- end -}}

{{/* "true" when the datasource verifies the server's certificate (needs the CA mounted). */}}
{{- define "grafana.databaseVerifies" -}}
{{- if has .Values.database.sslmode (list "verify-ca" "verify-full") }}true{{ end -}}
{{- end -}}

{{- define "grafana.databaseCaSecret" -}}
{{- required "database.caSecret is required with sslmode verify-ca or verify-full (the Secret holding the CA certificate)" (tpl .Values.database.caSecret .) -}}
{{- end -}}

{{- define "grafana.databaseCaFile" -}}/etc/grafana/database-ca/ca.crt{{- end -}}

{{- define "grafana.databaseHost" -}}
{{- required "database.host is required" (tpl .Values.database.host .) -}}
{{- end -}}

{{/* "true" when the Prometheus datasource is provisioned: prometheus.enabled when set,
     else whether prometheus.url names a server (configuring one is asking for it). */}}
{{- define "grafana.prometheusEnabled" -}}
{{- $p := .Values.prometheus -}}
{{- if kindIs "invalid" $p.enabled -}}
{{- if $p.url }}true{{ end -}}
{{- else if $p.enabled }}true{{ end -}}
{{- end -}}

{{/* A dashboard file as JSON; panels on the Prometheus datasource are dropped when that
     datasource is not provisioned, so no panel points at a datasource that is missing. */}}
{{- define "grafana.dashboard" -}}
{{- $root := index . 0 -}}
{{- $dashboard := $root.Files.Get (index . 1) | fromJson -}}
{{- if not (include "grafana.prometheusEnabled" $root) -}}
{{- $kept := list -}}
{{- range $dashboard.panels -}}
{{- if ne (dig "datasource" "uid" "" .) "energy-prometheus" -}}
{{- $kept = append $kept . -}}
{{- end -}}
{{- end -}}
{{- $_ := set $dashboard "panels" $kept -}}
{{- end -}}
{{- toPrettyJson $dashboard -}}
{{- end -}}

{{/* Alert rules with the thresholds from values in place of their placeholders. */}}
{{- define "grafana.alertRules" -}}
{{- $a := .Values.alerts -}}
{{- $placeholders := dict
      "__FOLDER__" ($a.folder | toString | quote)
      "__STALE_AFTER_SECONDS__" ($a.staleData.afterSeconds | toString)
      "__STALE_FOR__" ($a.staleData.for | toString)
      "__CONSUMPTION_THRESHOLD__" ($a.forecastConsumption.threshold | toString)
      "__CONSUMPTION_FOR__" ($a.forecastConsumption.for | toString)
      "__ERROR_MAX_PERCENT__" ($a.forecastError.maxPercent | toString)
      "__ERROR_MIN_SAMPLES__" ($a.forecastError.minSamples | toString)
      "__ERROR_FOR__" ($a.forecastError.for | toString)
      "__LOST_WITHIN_HOURS__" ($a.readingsLost.withinHours | toString)
      "__LOST_MORE_THAN__" ($a.readingsLost.moreThan | toString) -}}
{{- $rules := .Files.Get "alerting/rules.yaml" -}}
{{- range $key, $value := $placeholders -}}
{{- $rules = replace $key $value $rules -}}
{{- end -}}
{{- $rules -}}
{{- end -}}
