{{- define "kafka.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kafka.fullname" -}}
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

{{- define "kafka.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kafka.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kafka.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: broker
app.kubernetes.io/part-of: energy-pipeline
{{- end -}}

{{- define "kafka.headless" -}}
{{- printf "%s-headless" (include "kafka.fullname" .) -}}
{{- end -}}

{{/* Domain of the pods' stable DNS names: <pod>.<this>. */}}
{{- define "kafka.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "kafka.headless" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* What clients put in bootstrap.servers (KAFKA_BOOTSTRAP_SERVERS). */}}
{{- define "kafka.bootstrapServers" -}}
{{- printf "%s.%s.svc:%v" (include "kafka.fullname" .) .Release.Namespace .Values.listeners.client.port -}}
{{- end -}}

{{- define "kafka.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "kafka.fullname" .)) .Values.auth.tls.secretName -}}
{{- end -}}

{{- define "kafka.saslSecretName" -}}
{{- default (printf "%s-sasl" (include "kafka.fullname" .)) .Values.auth.sasl.existingSecret -}}
{{- end -}}

{{/* The SCRAM users, one per role of the pipeline. */}}
{{- define "kafka.users" -}}bridge ingest operator{{- end -}}

{{/* Users that exist only while the users Secret holds their password (users.sh): a Kafka
     UI's (charts/kafka-ui), which the energy-platform chart's hook adds with kafkaUi.enabled. */}}
{{- define "kafka.optionalUsers" -}}kafka-ui{{- end -}}

{{/* What a Kafka UI needs to show everything and change nothing: kafbat's list for its
     read-only mode (ui-docs, quick-start/prerequisites/permissions/required-acls.md: READ and
     DESCRIBE_CONFIGS on every topic, DESCRIBE on every group, DESCRIBE and DESCRIBE_CONFIGS on
     the cluster), DESCRIBE on topics written out although READ implies it. It reads messages
     without a consumer group, so no READ on groups: it commits and resets no offsets. */}}
{{- define "kafka.optionalAcls" -}}
User:kafka-ui Read,Describe,DescribeConfigs --topic *
User:kafka-ui Describe --group *
User:kafka-ui Describe,DescribeConfigs --cluster
{{- end -}}

{{/* The least each role's code needs on the pipeline's topics (the harness's role_acls,
     kept equal by a unit test): bridge writes readings, forecast weather and rejects; ingest
     reads readings and forecast weather in its group and writes its rejects; operator creates, describes, grows, keeps the configs
     of and deletes. */}}
{{- define "kafka.acls" -}}
{{- $prefix := .Values.auth.acls.topicPrefix -}}
{{- $deadletter := printf "--topic %s.deadletter" $prefix -}}
{{- $readings := list -}}
{{- range .Values.auth.acls.sensors }}{{ $readings = append $readings (printf "--topic %s.%s" $prefix .) }}{{ end -}}
{{- $readings = append $readings (printf "--topic %s.weather_forecast" $prefix) -}}
User:bridge Write,Describe {{ join " " $readings }} {{ $deadletter }}
User:operator Create,Describe,Alter,Delete,DescribeConfigs,AlterConfigs {{ join " " $readings }} {{ $deadletter }}
User:ingest Read,Describe {{ join " " $readings }}
User:ingest Write,Describe {{ $deadletter }}
User:ingest Read,Describe --group {{ .Values.auth.acls.consumerGroup }}
{{- end -}}

{{- define "kafka.clientProtocol" -}}
{{- if and .Values.auth.sasl.enabled .Values.auth.tls.enabled -}}SASL_SSL
{{- else if .Values.auth.sasl.enabled -}}SASL_PLAINTEXT
{{- else if .Values.auth.tls.enabled -}}SSL
{{- else -}}PLAINTEXT
{{- end -}}
{{- end -}}
