{{/* Names, labels and derived settings shared by the templates; they follow ha-operator's render. */}}

{{- define "ha.name" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "ha.selectorLabels" -}}
app.kubernetes.io/instance: {{ include "ha.name" . }}
app.kubernetes.io/name: ha
ha.sqlite.dev/cluster: {{ include "ha.name" . }}
{{- end -}}

{{- define "ha.labels" -}}
{{ include "ha.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ha.external" -}}
{{- if .Values.nats.external.url }}true{{ end -}}
{{- end -}}

{{/* Embedded nats-servers form a cluster only with more than one replica. */}}
{{- define "ha.clustered" -}}
{{- if and (not (include "ha.external" .)) (gt (int .Values.replicas) 1) }}true{{ end -}}
{{- end -}}

{{- define "ha.streamReplicas" -}}
{{- if .Values.replication.streamReplicas -}}
{{- .Values.replication.streamReplicas -}}
{{- else -}}
{{- max 1 (min 3 (int .Values.replicas)) -}}
{{- end -}}
{{- end -}}

{{- define "ha.routes" -}}
{{- $name := include "ha.name" . -}}
{{- $routes := list -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $routes = append $routes (printf "nats-route://%s-%d.%s-peers.%s.svc.cluster.local:%d" $name $i $name $.Release.Namespace (int $.Values.nats.embedded.clusterPort)) -}}
{{- end -}}
{{- join "," $routes -}}
{{- end -}}

{{/* Container ports by name: http, then pg and NATS when in use. */}}
{{- define "ha.ports" -}}
- name: http
  port: {{ .Values.http.port }}
{{- if .Values.postgres.enabled }}
- name: pg
  port: {{ .Values.postgres.port }}
{{- end }}
{{- if not (include "ha.external" .) }}
- name: nats
  port: {{ .Values.nats.embedded.port }}
- name: nats-cluster
  port: {{ .Values.nats.embedded.clusterPort }}
{{- end }}
{{- end -}}


{{/* What ha-operator refuses, refused here too (the schema checks types and ranges). */}}
{{- define "ha.validate" -}}
{{- $v := .Values -}}
{{- if and (not (include "ha.external" .)) (gt (int (include "ha.streamReplicas" .)) (int $v.replicas)) -}}
{{- fail "replication.streamReplicas cannot exceed replicas with embedded NATS" -}}
{{- end -}}
{{- range $k, $_ := (include "ha.selectorLabels" . | fromYaml) -}}
{{- if hasKey ($v.pod.labels | default dict) $k -}}
{{- fail (printf "pod.labels: %s is a selector label of the chart and cannot be set" $k) -}}
{{- end -}}
{{- end -}}
{{- if and $v.http.ingress.enabled $v.http.disableToken -}}
{{- fail "http.ingress exposes the HTTP API and needs a token: remove http.disableToken (the chart then generates one) or name http.tokenSecret" -}}
{{- end -}}
{{- $f := (($v.bootstrap | default dict).fromBackup) | default dict -}}
{{- if and $f.toSeq $f.toTime -}}
{{- fail "bootstrap.fromBackup: set at most one of toSeq and toTime (neither restores the latest)" -}}
{{- end -}}
{{- $b := $v.backup | default dict -}}
{{- if and $b.url $f.url -}}
{{- range $k := list "endpoint" "region" "credentialsSecret" -}}
{{- if and (get $b $k) (get $f $k) (ne (get $b $k) (get $f $k)) -}}
{{- fail "bootstrap.fromBackup and backup must use the same endpoint, region and credentialsSecret (a node has one set of object-storage settings); omit them in bootstrap.fromBackup to use backup's" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
