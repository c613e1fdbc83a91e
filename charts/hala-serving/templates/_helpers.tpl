{{- define "hala-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hala-serving.labels" -}}
{{ include "hala-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The objects of one model: <release>-<model name>, at most 63 characters. */}}
{{- define "hala-serving.modelFullname" -}}
{{- printf "%s-%s" .root.Release.Name .model.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hala-serving.modelSelector" -}}
{{ include "hala-serving.selectorLabels" .root }}
hala.dev/model: {{ .model.name }}
{{- end -}}

{{- define "hala-serving.modelLabels" -}}
{{ include "hala-serving.labels" .root }}
hala.dev/model: {{ .model.name }}
{{- with .model.registry }}
{{- if .name }}
hala.dev/registered-model: {{ .name | quote }}
{{- end }}
{{- if .version }}
hala.dev/registered-version: {{ .version | quote }}
{{- end }}
{{- if .alias }}
hala.dev/alias: {{ .alias | quote }}
{{- end }}
{{- if .model_id }}
hala.dev/logged-model: {{ .model_id | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "hala-serving.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "v%s" .Chart.AppVersion) }}
{{- end -}}
{{- end -}}
