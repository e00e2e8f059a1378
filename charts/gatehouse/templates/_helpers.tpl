{{/* Chart name. */}}
{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "gatehouse.fullname" -}}
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

{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
Refuses configurations that cannot work: SQLite is one file on one volume, so it cannot be
shared by several replicas (the settlement journal's exactly-once guarantee would not hold
across pods), and postgres needs a URL.
*/}}
{{- define "gatehouse.validate" -}}
{{- $db := .Values.database -}}
{{- if eq $db.kind "sqlite" -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail "replicaCount > 1 needs database.kind=postgres: SQLite cannot be shared by several replicas" -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "autoscaling.enabled needs database.kind=postgres: SQLite cannot be shared by several replicas" -}}
{{- end -}}
{{- else if eq $db.kind "postgres" -}}
{{- if and (not $db.url) (not $db.existingSecret) -}}
{{- fail "database.kind=postgres needs database.url or database.existingSecret" -}}
{{- end -}}
{{- else -}}
{{- fail "database.kind must be sqlite or postgres" -}}
{{- end -}}
{{- end -}}

{{/* GATEHOUSE_DATABASE_URL from the Secret, the inline URL, or the SQLite file. */}}
{{- define "gatehouse.databaseEnv" -}}
{{- $db := .Values.database -}}
- name: GATEHOUSE_DATABASE_URL
{{- if $db.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.secretKey }}
{{- else if $db.url }}
  value: {{ $db.url | quote }}
{{- else }}
  value: {{ printf "sqlite://%s" $db.sqlitePath | quote }}
{{- end }}
{{- end -}}
