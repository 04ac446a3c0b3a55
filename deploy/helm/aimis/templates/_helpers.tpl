{{/* Names and labels. */}}
{{- define "aimis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aimis.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one deployable: (dict "root" $ "name" "order"). */}}
{{- define "aimis.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The merged settings of one deployable, as YAML: (dict "root" $ "name" "order"). */}}
{{- define "aimis.service" -}}
{{- $cfg := index .root.Values.services .name | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $cfg)) -}}
{{- end -}}

{{- define "aimis.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "aimis.kafkaBootstrap" -}}
{{- if eq .Values.kafka.mode "strimzi" -}}
{{- .Values.kafka.strimzi.bootstrap | default (printf "%s-kafka-bootstrap:9092" .Values.kafka.strimzi.clusterName) -}}
{{- else if eq .Values.kafka.mode "external" -}}
{{- required "kafka.external.bootstrap is required when kafka.mode=external" .Values.kafka.external.bootstrap -}}
{{- else -}}
{{- fail (printf "kafka.mode must be strimzi or external, not %q" .Values.kafka.mode) -}}
{{- end -}}
{{- end -}}

{{/* The Kafka principal (user name) of one entry of kafka.principals. */}}
{{- define "aimis.kafkaUser" -}}
{{- if eq .root.Values.kafka.mode "strimzi" -}}
{{- printf "%s%s" .root.Values.kafka.strimzi.userPrefix .name -}}
{{- else -}}
{{- .name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding that principal's password: Strimzi's per-user Secret, or the operator's own. */}}
{{- define "aimis.kafkaPasswordRef" -}}
{{- if eq .root.Values.kafka.mode "strimzi" -}}
name: {{ include "aimis.kafkaUser" . }}
key: password
{{- else -}}
name: {{ printf "%s%s" .root.Values.kafka.external.secretPrefix .name }}
key: {{ .root.Values.kafka.external.passwordKey }}
{{- end -}}
{{- end -}}

{{/* Where AIMIS_DATABASE_URL comes from: CloudNativePG's application Secret, or the operator's. */}}
{{- define "aimis.databaseUrlRef" -}}
{{- if eq .Values.postgresql.mode "cnpg" -}}
name: {{ printf "%s-app" .Values.postgresql.cnpg.clusterName }}
key: uri
{{- else if eq .Values.postgresql.mode "external" -}}
name: {{ required "postgresql.external.secretName is required" .Values.postgresql.external.secretName }}
key: {{ .Values.postgresql.external.key }}
{{- else -}}
{{- fail (printf "postgresql.mode must be cnpg or external, not %q" .Values.postgresql.mode) -}}
{{- end -}}
{{- end -}}

{{/* Every topic named by a principal must be in kafka.topics. */}}
{{- define "aimis.checkTopics" -}}
{{- $known := list -}}
{{- range .Values.kafka.topics }}{{ $known = append $known .name }}{{ end -}}
{{- range $name, $p := .Values.kafka.principals -}}
{{- range (concat ($p.produces | default list) ($p.consumes | default list)) -}}
{{- if not (has . $known) -}}
{{- fail (printf "kafka.principals.%s names topic %s, which is not in kafka.topics" $name .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
