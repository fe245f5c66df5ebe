{{- define "certpilot.labels" -}}
app.kubernetes.io/name: certpilot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "certpilot.selector" -}}
app.kubernetes.io/name: certpilot
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
