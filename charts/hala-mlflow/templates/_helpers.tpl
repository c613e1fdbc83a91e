{{- define "hala-mlflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hala-mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hala-mlflow.labels" -}}
{{ include "hala-mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hala-mlflow.postgresql" -}}
{{ include "hala-mlflow.fullname" . }}-postgresql
{{- end -}}

{{/* Host headers MLflow accepts: the Service's names in every form a pod may use, localhost, and the ingress host. */}}
{{- define "hala-mlflow.allowedHosts" -}}
{{- $svc := include "hala-mlflow.fullname" . -}}
{{- $hosts := list $svc (printf "%s:*" $svc) (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s:*" $svc .Release.Namespace) (printf "%s.%s.svc*" $svc .Release.Namespace) "localhost" "localhost:*" "127.0.0.1:*" -}}
{{- if .Values.ingress.enabled -}}{{- $hosts = append $hosts .Values.ingress.host -}}{{- end -}}
{{- concat $hosts .Values.server.allowedHosts | join "," -}}
{{- end -}}
