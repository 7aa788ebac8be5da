{{/* Chart name, overridable. */}}
{{- define "cannes-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart, or the release name alone when it already contains the chart name
(`helm install cannes-operator`), or the chart name alone when the release name is its first
word (`helm install cannes` names objects cannes-operator, not cannes-cannes-operator).
*/}}
{{- define "cannes-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else if hasPrefix (printf "%s-" .Release.Name) $name }}
{{- $name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cannes-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cannes-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cannes-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cannes-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cannes
{{- end }}

{{- define "cannes-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cannes-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cannes-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Lease the operator's leader election uses (`--leader-election-id`). Leader election is
always on, also with one replica, so a `kubectl scale` never runs two unelected operators.
*/}}
{{- define "cannes-operator.leaseName" -}}
{{- .Values.leaderElection.id }}
{{- end }}

{{/* PromQL label matchers for the operator's own series. */}}
{{- define "cannes-operator.promSelector" -}}
{{- default (printf "job=%q" (include "cannes-operator.fullname" .)) .Values.prometheusRule.selector }}
{{- end }}

{{/* Labels of the `helm test` pod; a NetworkPolicy peer admits it to the metrics port. */}}
{{- define "cannes-operator.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "cannes-operator.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of the `helm test` objects: not the operator's selector labels, so the metrics Service and the PDB never pick the test pod. */}}
{{- define "cannes-operator.testLabels" -}}
{{ include "cannes-operator.testSelectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cannes
app.kubernetes.io/component: helm-test
{{- end }}
