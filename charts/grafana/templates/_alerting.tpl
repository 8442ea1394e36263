{{/*
Alert delivery: contact points, the notification policy and the mail server, from
alerts.contactPoints, alerts.notificationPolicy and smtp.

Formats (Grafana 12, file provisioning of alerting resources, apiVersion 1):
- documents: grafana/grafana docs/sources/alerting/set-up/provision-alerting-resources/
  file-provisioning/index.md ("Provision contact points", "Provision notification policies")
  and pkg/services/provisioning/alerting (ContactPointV1: orgId, name, receivers[uid, type,
  settings, disableResolveMessage]; NotificiationPolicyV1: orgId and a route inline).
- settings keys: grafana/alerting receivers/<type>/v1/config.go (email: addresses,
  singleEmail; slack: url or token + recipient; webhook: url, httpMethod; pagerduty:
  integrationKey, severity).
- ${VARIABLE} in settings: Grafana expands it from its environment when it provisions
  ("Template variable interpolation" in the same docs; contact point settings since 9.1.7,
  grafana/grafana#55666); `$$` stays a literal `$`.
*/}}

{{/* A value written into a provisioning file as it is: `$` doubled, so Grafana's
     interpolation leaves it alone. */}}
{{- define "grafana.literal" -}}
{{- replace "$" "$$" (toString .) -}}
{{- end -}}

{{/* The contact points the values enable, as a JSON list in a fixed order, each
     {name, type, settings, severities, env}: env lists the variables Grafana needs, each
     {name, secret, key}; settings refer to them as ${name}. Fails on values that cannot
     work. */}}
{{- define "grafana.contactPoints" -}}
{{- $out := list -}}
{{- $cps := .Values.alerts.contactPoints -}}
{{- with $cps.email -}}
{{- if .enabled -}}
{{- if not .addresses -}}
{{- fail "alerts.contactPoints.email.enabled needs alerts.contactPoints.email.addresses (the recipients)" -}}
{{- end -}}
{{- if not $.Values.smtp.host -}}
{{- fail "alerts.contactPoints.email.enabled needs smtp.host (and smtp.fromAddress): Grafana sends email through that server" -}}
{{- end -}}
{{- $addresses := list -}}
{{- range .addresses -}}
{{- $addresses = append $addresses (include "grafana.literal" .) -}}
{{- end -}}
{{- $settings := dict "addresses" (join ";" $addresses) "singleEmail" (.singleEmail | default false) -}}
{{- $out = append $out (dict "name" "energy-pipeline-email" "type" "email" "settings" $settings "severities" .severities "env" list) -}}
{{- end -}}
{{- end -}}
{{- with $cps.slack -}}
{{- if .enabled -}}
{{- $secret := required "alerts.contactPoints.slack.enabled needs alerts.contactPoints.slack.secretName (your Secret with the webhook URL or bot token)" .secretName -}}
{{- $settings := dict -}}
{{- $env := list -}}
{{- if .tokenKey -}}
{{- if not .recipient -}}
{{- fail "alerts.contactPoints.slack.tokenKey (a bot token) needs alerts.contactPoints.slack.recipient: Slack's chat API posts to a named channel or user" -}}
{{- end -}}
{{- $_ := set $settings "token" "${ENERGY_ALERT_SLACK_TOKEN}" -}}
{{- $env = append $env (dict "name" "ENERGY_ALERT_SLACK_TOKEN" "secret" $secret "key" .tokenKey) -}}
{{- else -}}
{{- $key := required "alerts.contactPoints.slack.urlKey is required (the key of the webhook URL in secretName), or tokenKey for a bot token" .urlKey -}}
{{- $_ := set $settings "url" "${ENERGY_ALERT_SLACK_URL}" -}}
{{- $env = append $env (dict "name" "ENERGY_ALERT_SLACK_URL" "secret" $secret "key" $key) -}}
{{- end -}}
{{- with .recipient -}}
{{- $_ := set $settings "recipient" (include "grafana.literal" .) -}}
{{- end -}}
{{- $out = append $out (dict "name" "energy-pipeline-slack" "type" "slack" "settings" $settings "severities" .severities "env" $env) -}}
{{- end -}}
{{- end -}}
{{- with $cps.webhook -}}
{{- if .enabled -}}
{{- $secret := required "alerts.contactPoints.webhook.enabled needs alerts.contactPoints.webhook.secretName (your Secret with the URL)" .secretName -}}
{{- $key := required "alerts.contactPoints.webhook.urlKey is required (the key of the URL in secretName)" .urlKey -}}
{{- $settings := dict "url" "${ENERGY_ALERT_WEBHOOK_URL}" "httpMethod" (.httpMethod | default "POST") -}}
{{- $env := list (dict "name" "ENERGY_ALERT_WEBHOOK_URL" "secret" $secret "key" $key) -}}
{{- $out = append $out (dict "name" "energy-pipeline-webhook" "type" "webhook" "settings" $settings "severities" .severities "env" $env) -}}
{{- end -}}
{{- end -}}
{{- with $cps.pagerduty -}}
{{- if .enabled -}}
{{- $secret := required "alerts.contactPoints.pagerduty.enabled needs alerts.contactPoints.pagerduty.secretName (your Secret with the routing key)" .secretName -}}
{{- $key := required "alerts.contactPoints.pagerduty.routingKeyKey is required (the key of the routing key in secretName)" .routingKeyKey -}}
{{- /* The rules' severity label (critical or warning) is PagerDuty's severity too. */ -}}
{{- $settings := dict "integrationKey" "${ENERGY_ALERT_PAGERDUTY_KEY}" "severity" "{{ .CommonLabels.severity }}" -}}
{{- $env := list (dict "name" "ENERGY_ALERT_PAGERDUTY_KEY" "secret" $secret "key" $key) -}}
{{- $out = append $out (dict "name" "energy-pipeline-pagerduty" "type" "pagerduty" "settings" $settings "severities" .severities "env" $env) -}}
{{- end -}}
{{- end -}}
{{- range $out -}}
{{- if not .severities -}}
{{- fail (printf "alerts.contactPoints.%s.severities is empty: the contact point would receive nothing" .type) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* contact-points.yaml: one contact point per enabled channel, one receiver each (its uid
     is the contact point's name). Argument: (list $ contactPoints). */}}
{{- define "grafana.contactPointsFile" -}}
# From the grafana chart's alerts.contactPoints. ${...}: filled in by Grafana from its
# environment (the Deployment takes them from your Secrets).
apiVersion: 1
contactPoints:
{{- range index . 1 }}
  - orgId: 1
    name: {{ .name }}
    receivers:
      - uid: {{ .name }}
        type: {{ .type }}
        disableResolveMessage: false
        settings:
          {{- toYaml .settings | nindent 10 }}
{{- end }}
{{- end -}}

{{/* notification-policies.yaml: org 1's whole tree. Per contact point a route matching its
     severities, with `continue` so the next routes see the alert too. Argument:
     (list $ contactPoints). */}}
{{- define "grafana.notificationPoliciesFile" -}}
{{- $policy := (index . 0).Values.alerts.notificationPolicy -}}
{{- $contactPoints := index . 1 -}}
# From the grafana chart's alerts.notificationPolicy: replaces org 1's policy tree.
apiVersion: 1
policies:
  - orgId: 1
    receiver: {{ $policy.receiver | default (first $contactPoints).name | toJson }}
    group_by: {{ toJson $policy.groupBy }}
    group_wait: {{ toJson $policy.groupWait }}
    group_interval: {{ toJson $policy.groupInterval }}
    repeat_interval: {{ toJson $policy.repeatInterval }}
    routes:
      {{- range $policy.extraRoutes }}
      - {{ toJson . }}
      {{- end }}
      {{- range $contactPoints }}
      {{- $severities := list }}
      {{- range .severities }}
      {{- $severities = append $severities (include "grafana.literal" .) }}
      {{- end }}
      {{- $matcher := list "severity" "=" (first $severities) }}
      {{- if gt (len $severities) 1 }}
      {{- $alternatives := list }}
      {{- range $severities }}
      {{- $alternatives = append $alternatives (regexQuoteMeta .) }}
      {{- end }}
      {{- $matcher = list "severity" "=~" (join "|" $alternatives) }}
      {{- end }}
      - receiver: {{ .name }}
        object_matchers: [{{ toJson $matcher }}]
        continue: true
      {{- end }}
{{- end -}}

{{/* The mail server as GF_SMTP_* variables (Grafana's [smtp] section, conf/defaults.ini),
     the password from your Secret. Nothing without smtp.host. */}}
{{- define "grafana.smtpEnv" -}}
{{- with .Values.smtp -}}
{{- if .host -}}
{{- if not (regexMatch ":[0-9]+$" .host) -}}
{{- fail (printf "smtp.host %q needs a port (host:port, e.g. smtp.example.com:587): Grafana's mailer dials exactly that" .host) -}}
{{- end -}}
{{- $from := required "smtp.host needs smtp.fromAddress (the sender of Grafana's email)" .fromAddress -}}
{{- if and .user (not .passwordSecret.name) -}}
{{- fail "smtp.user needs smtp.passwordSecret.name (your Secret with its password)" -}}
{{- end -}}
{{- if and .passwordSecret.name (not .user) -}}
{{- fail "smtp.passwordSecret.name needs smtp.user (the account the password belongs to)" -}}
{{- end -}}
- name: GF_SMTP_ENABLED
  value: "true"
- name: GF_SMTP_HOST
  value: {{ .host | quote }}
- name: GF_SMTP_FROM_ADDRESS
  value: {{ $from | quote }}
- name: GF_SMTP_FROM_NAME
  value: {{ .fromName | quote }}
- name: GF_SMTP_STARTTLS_POLICY
  value: {{ .startTLSPolicy | quote }}
- name: GF_SMTP_SKIP_VERIFY
  value: {{ .skipVerify | default false | quote }}
{{- with .user }}
- name: GF_SMTP_USER
  value: {{ . | quote }}
- name: GF_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.smtp.passwordSecret.name }}
      key: {{ required "smtp.passwordSecret.key is required" $.Values.smtp.passwordSecret.key }}
{{- end }}
{{- end -}}
{{- end -}}
{{- end -}}
