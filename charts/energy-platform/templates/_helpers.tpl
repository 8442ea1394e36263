{{- define "energy-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: energy-pipeline
{{- end -}}

{{/* Names of the components' Services and Secrets, as their charts derive them. */}}
{{- define "energy-platform.kafkaBootstrap" -}}
{{- printf "%s-kafka.%s.svc:%v" .Release.Name .Release.Namespace .Values.kafka.listeners.client.port -}}
{{- end -}}

{{- define "energy-platform.mqttHost" -}}
{{- printf "%s-hivemq.%s.svc" .Release.Name .Release.Namespace -}}
{{- end -}}

{{- define "energy-platform.image" -}}
{{- $op := .Values.operator.image -}}
{{- printf "%s:%s" $op.repository ($op.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The example pipeline's MQTT topic root: spec.mqtt.topicRoot from example.extraSpec, else
     what the operator derives, its name. The simulator publishes and the MQTT users may
     publish or subscribe under it. */}}
{{- define "energy-platform.topicRoot" -}}
{{- (.Values.example.extraSpec.mqtt | default dict).topicRoot | default .Values.example.name -}}
{{- end -}}
