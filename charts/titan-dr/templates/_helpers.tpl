{{/* The chart's name, or nameOverride. */}}
{{- define "titan-dr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else the release name when it contains the chart's name
(`helm install titan-dr` gives `titan-dr`, as in manifests/), else <release>-<name>.
*/}}
{{- define "titan-dr.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "titan-dr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods; they never change for a release. */}}
{{- define "titan-dr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "titan-dr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object. */}}
{{- define "titan-dr.labels" -}}
{{ include "titan-dr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: titan-dr
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "titan-dr.chart" . }}
{{- end }}

{{- define "titan-dr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "titan-dr.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "titan-dr.backupClaimName" -}}
{{- default (printf "%s-backups" (include "titan-dr.fullname" .)) .Values.backups.persistence.existingClaim }}
{{- end }}

{{/*
The operator's rights on namespaced resources: the ClusterRole's rules, and in a namespaced
install (rbac.namespaced) the Role's in operator.watchNamespace.
*/}}
{{- define "titan-dr.namespacedRules" -}}
- apiGroups: ["dr.titan.io"]
  resources: ["disasterrecoveries", "backups"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["dr.titan.io"]
  resources: ["recoveryruns"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["dr.titan.io"]
  resources: ["disasterrecoveries/status", "recoveryruns/status", "backups/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["list", "create", "patch"]
{{- end }}

{{/* Whether the operator's rights are Roles (rbac.namespaced), which need a namespace. */}}
{{- define "titan-dr.namespaced" -}}
{{- if .Values.rbac.namespaced }}
{{- required "rbac.namespaced needs operator.watchNamespace: the namespace the Roles are in" .Values.operator.watchNamespace }}
{{- end }}
{{- end }}
