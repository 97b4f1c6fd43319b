{{/*
Helpers of the cohort-operator chart. Keep to what tools/k8s/render_defaults.py
supports: define/include, .Values/.Release/.Chart paths, if/else/end, and the
pipes quote, default, trunc, trimSuffix, toYaml, nindent, indent.
*/}}

{{- define "cohort-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cohort-operator.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cohort-operator.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default .Release.Name -}}
{{- end -}}

{{- define "cohort-operator.labels" -}}
app.kubernetes.io/name: {{ include "cohort-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "cohort-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cohort-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
