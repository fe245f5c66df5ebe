{{- /*
The templates keep to a small subset of Helm's template language, so that tests/helm.rs renders
them without Helm (with a Go text/template engine and minimal versions of Helm's functions):

  data      .Values.*  .Release.Name  .Release.Namespace  .Release.Service  .Chart.AppVersion
  actions   if / else if / else / end, range, with, define, $variables, {{- -}} trimming
  builtins  and  or  not  eq  ne  gt  printf
  Helm's    include  default  quote  toYaml  nindent  int

Anything else (tpl, lookup, required, dict, merge, ...) needs a matching function in
tests/support/helm.rs first.
*/ -}}
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
