{{/* The chart name, or nameOverride. */}}
{{- define "sidecar-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: fullnameOverride, else the release name when it already
contains the chart name (release `sidecar-operator` gives the names of deploy/), else
"<release>-<name>". Cut to 40 characters so that the longest suffix still fits 63.
*/}}
{{- define "sidecar-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "sidecar-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "sidecar-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sidecar-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The labels that select the operator's Pods (immutable in a Deployment). */}}
{{- define "sidecar-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidecar-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sidecar-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sidecar-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sidecar-operator.webhookSecretName" -}}
{{- if eq .Values.webhook.certificate.source "secret" -}}
{{- required "webhook.certificate.secretName: name the kubernetes.io/tls Secret when webhook.certificate.source is secret" .Values.webhook.certificate.secretName -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "sidecar-operator.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
namespaceSelector as the operator's label-selector text (`k=v,k in (a,b),!k`), the same
terms the webhook's namespaceSelector gets.
*/}}
{{- define "sidecar-operator.selectorTerms" -}}
{{- $terms := list -}}
{{- range $k, $v := (.matchLabels | default dict) -}}
{{- $terms = append $terms (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- range (.matchExpressions | default list) -}}
{{- if eq .operator "In" -}}
{{- $terms = append $terms (printf "%s in (%s)" .key (join "," .values)) -}}
{{- else if eq .operator "NotIn" -}}
{{- $terms = append $terms (printf "%s notin (%s)" .key (join "," .values)) -}}
{{- else if eq .operator "Exists" -}}
{{- $terms = append $terms .key -}}
{{- else if eq .operator "DoesNotExist" -}}
{{- $terms = append $terms (printf "!%s" .key) -}}
{{- else -}}
{{- fail (printf "namespaceSelector.matchExpressions: operator %q of key %q is not In, NotIn, Exists or DoesNotExist" .operator .key) -}}
{{- end -}}
{{- end -}}
{{- join "," $terms -}}
{{- end -}}

{{/* The webhook's namespace terms: namespaceSelector, and watchNamespace by name. */}}
{{- define "sidecar-operator.webhookSelectorTerms" -}}
{{- $terms := list -}}
{{- with (include "sidecar-operator.selectorTerms" .Values.namespaceSelector) -}}
{{- $terms = append $terms . -}}
{{- end -}}
{{- with .Values.watchNamespace -}}
{{- $terms = append $terms (printf "kubernetes.io/metadata.name=%s" .) -}}
{{- end -}}
{{- join "," $terms -}}
{{- end -}}

{{/*
ClusterSidecarPolicies are applied (non-empty) unless turned off or the release manages one
namespace only.
*/}}
{{- define "sidecar-operator.clusterPolicies" -}}
{{- if and .Values.clusterPolicies (not .Values.watchNamespace) }}true{{ end }}
{{- end }}
