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

{{/* The PostgreSQL schemas of the pipelines (value `pipelines`), as a JSON list: each
     EnergyPipeline keeps its tables in a schema of its own (spec.database.schema). Fails
     unless it is a non-empty list of distinct names as the CRD admits them there, since a
     name goes unescaped between double quotes into the rules' SQL. */}}
{{- define "grafana.pipelines" -}}
{{- $pipelines := .Values.pipelines -}}
{{- if not (kindIs "slice" $pipelines) -}}
{{- fail "pipelines must be a list of PostgreSQL schema names (spec.database.schema of each EnergyPipeline), e.g. [energy]" -}}
{{- end -}}
{{- if not $pipelines -}}
{{- fail "pipelines must name at least one pipeline's PostgreSQL schema (spec.database.schema; by default the EnergyPipeline's name with '-' as '_'), e.g. [energy]" -}}
{{- end -}}
{{- range $pipelines -}}
{{- if not (regexMatch "^[a-z_][a-z0-9_]{0,62}$" (toString .)) -}}
{{- fail (printf "pipelines: %q is not a schema name as spec.database.schema admits it (lower-case letters, digits and '_', not starting with a digit, at most 63)" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- if ne (len $pipelines) (len (uniq $pipelines)) -}}
{{- fail (printf "pipelines names a schema twice: %v" $pipelines) -}}
{{- end -}}
{{- toJson $pipelines -}}
{{- end -}}

{{/* A dashboard file as JSON; panels on the Prometheus datasource are dropped when that
     datasource is not provisioned, so no panel points at a datasource that is missing. The
     `pipeline` variable opens on the first of `pipelines` (Grafana keeps a current value that
     its query still lists, else takes the first it lists). */}}
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
{{- $first := include "grafana.pipelines" $root | fromJsonArray | first -}}
{{- range $dashboard.templating.list -}}
{{- if eq .name "pipeline" -}}
{{- $_ := set . "current" (dict "selected" true "text" $first "value" $first) -}}
{{- end -}}
{{- end -}}
{{- toPrettyJson $dashboard -}}
{{- end -}}

{{/* A rule's uid in the copy for one pipeline: <uid>-<schema>, or where that is longer than
     Grafana's 40 characters (util.IsValidShortUID), <uid>-<the schema's sha256, cut to fit>.
     Argument: (list uid schema). */}}
{{- define "grafana.ruleUid" -}}
{{- $base := index . 0 -}}
{{- $schema := index . 1 -}}
{{- $uid := printf "%s-%s" $base $schema -}}
{{- if gt (len $uid) 40 -}}
{{- $uid = printf "%s-%s" $base (sha256sum $schema | trunc (int (sub 39 (len $base)))) -}}
{{- end -}}
{{- $uid -}}
{{- end -}}

{{/* Alert rules with the thresholds from values in place of their placeholders, one copy of
     alerting/rules.yaml's group per pipeline (__PIPELINE__: its schema), each rule's uid
     suffixed (grafana.ruleUid). The uids the rules had before there were copies per pipeline
     are deleted: Grafana keeps a provisioned rule that leaves the file, and those read the
     tables unqualified, where a pipeline's tables no longer are. */}}
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
{{- $groups := list -}}
{{- $uids := list -}}
{{- $legacy := list -}}
{{- range $pipeline := include "grafana.pipelines" . | fromJsonArray -}}
{{- $doc := replace "__PIPELINE__" $pipeline $rules | fromYaml -}}
{{- with $doc.Error -}}
{{- fail (printf "alerting/rules.yaml with alerts.* in place is no YAML: %s" .) -}}
{{- end -}}
{{- range $group := $doc.groups -}}
{{- range $rule := $group.rules -}}
{{- $legacy = append $legacy $rule.uid -}}
{{- $_ := set $rule "uid" (include "grafana.ruleUid" (list $rule.uid $pipeline)) -}}
{{- $uids = append $uids $rule.uid -}}
{{- end -}}
{{- $groups = append $groups $group -}}
{{- end -}}
{{- end -}}
{{- $legacy = uniq $legacy -}}
{{- $all := concat $uids $legacy -}}
{{- if ne (len $all) (len (uniq $all)) -}}
{{- fail (printf "two alert rules would have the same uid: %v (pipelines whose schema names share their sha256 prefix?)" $uids) -}}
{{- end -}}
{{- $deletes := list -}}
{{- range $legacy -}}
{{- $deletes = append $deletes (dict "orgId" 1 "uid" .) -}}
{{- end -}}
# From the grafana chart's alerting/rules.yaml: one group per pipeline (`pipelines`).
{{ dict "apiVersion" 1 "groups" $groups "deleteRules" $deletes | toYaml }}
{{- end -}}
