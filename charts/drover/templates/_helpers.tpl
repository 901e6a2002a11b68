{{/*
Names are fixed, not prefixed with the release: the manager, the agents and the docs
find Services drover-hub and drover-webhook, Secret drover-hub-tls and the
ValidatingWebhookConfiguration by these names, and a hub runs one Drover (its CRDs are
cluster-scoped).
*/}}

{{- define "drover.labels" -}}
app.kubernetes.io/name: drover
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "drover.selectorLabels" -}}
app.kubernetes.io/name: drover
app.kubernetes.io/component: manager
{{- end }}

{{- define "drover.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "drover.hubURL" -}}
{{- .Values.hub.url | default (printf "https://drover-hub.%s.svc:%v" .Release.Namespace .Values.hub.service.port) }}
{{- end }}
