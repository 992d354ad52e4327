{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "newsmtl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name.
*/}}
{{- define "newsmtl.fullname" -}}
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

{{- define "newsmtl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "newsmtl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "newsmtl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "newsmtl.labels" -}}
helm.sh/chart: {{ include "newsmtl.chart" . }}
{{ include "newsmtl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: classifier
app.kubernetes.io/part-of: newsmtl
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "newsmtl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "newsmtl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
repository[:tag][@digest] from an image block; `tag` falls back to the second argument.
Usage: include "newsmtl.imageRef" (list .Values.image .Chart.AppVersion)
*/}}
{{- define "newsmtl.imageRef" -}}
{{- $image := index . 0 }}
{{- $fallbackTag := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $fallbackTag $image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The workload kind, validated.
*/}}
{{- define "newsmtl.workloadKind" -}}
{{- $kind := .Values.workload.kind }}
{{- if not (has $kind (list "Deployment" "StatefulSet")) }}
{{- fail (printf "workload.kind must be Deployment or StatefulSet, got %q" $kind) }}
{{- end }}
{{- $kind }}
{{- end }}

{{/*
terminationGracePeriodSeconds = ceil(shutdown.graceSeconds) + shutdown.marginSeconds, so the
kubelet's SIGKILL never cuts the service's own drain (NEWSMTL_SERVICE__SHUTDOWN_GRACE_S) short.
*/}}
{{- define "newsmtl.terminationGracePeriodSeconds" -}}
{{- $grace := float64 .Values.shutdown.graceSeconds }}
{{- $margin := int .Values.shutdown.marginSeconds }}
{{- if le $grace 0.0 }}
{{- fail "shutdown.graceSeconds must be positive" }}
{{- end }}
{{- if lt $margin 1 }}
{{- fail "shutdown.marginSeconds must be at least 1, or SIGKILL could land inside the drain" }}
{{- end }}
{{- add (int (ceil $grace)) $margin }}
{{- end }}

{{/*
A value as an environment string. Helm reads every YAML number as float64 and prints large ones in
exponent form (52428800 -> 5.24288e+07), which the service would reject, so integral numbers are
printed as integers.
*/}}
{{- define "newsmtl.envValue" -}}
{{- $value := . }}
{{- if kindIs "float64" $value }}
{{- if eq $value (floor $value) }}
{{- int64 $value }}
{{- else }}
{{- $value }}
{{- end }}
{{- else if or (kindIs "map" $value) (kindIs "slice" $value) }}
{{- fail (printf "config values must be scalars, got %v" $value) }}
{{- else }}
{{- $value }}
{{- end }}
{{- end }}

{{/*
Settings the chart derives itself; setting them under `config` would fight the chart.
*/}}
{{- define "newsmtl.reservedConfig" -}}
kafka.groupInstanceId: "workload.kind: StatefulSet (static membership from the pod name)"
kafka.saslPassword: "existingSecret.keys.kafkaSaslPassword"
kafka.sslPassword: "existingSecret.keys.kafkaSslPassword"
kafka.sslCafile: "kafkaTls.secretName / kafkaTls.caKey"
kafka.sslCertfile: "kafkaTls.certKey"
kafka.sslKeyfile: "kafkaTls.keyKey"
redis.password: "existingSecret.keys.redisPassword"
model.bundlePath: "modelBundle"
http.host: "nothing (the probes need 0.0.0.0)"
http.port: "httpPort"
service.shutdownGraceS: "shutdown.graceSeconds"
{{- end }}

{{/*
The NEWSMTL_* variables rendered from `config` plus the derived ones, as a dict name -> string.
*/}}
{{- define "newsmtl.configEnv" -}}
{{- $reserved := include "newsmtl.reservedConfig" . | fromYaml }}
{{- $env := dict }}
{{- range $section, $fields := .Values.config }}
{{- if not (kindIs "map" $fields) }}
{{- fail (printf "config.%s must be a map of settings" $section) }}
{{- end }}
{{- range $key, $value := $fields }}
{{- $path := printf "%s.%s" $section $key }}
{{- if hasKey $reserved $path }}
{{- fail (printf "config.%s is set by the chart; use %s instead" $path (get $reserved $path)) }}
{{- end }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{- $name := printf "NEWSMTL_%s__%s" (upper (snakecase $section)) (upper (snakecase $key)) }}
{{- $_ := set $env $name (include "newsmtl.envValue" $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $env "NEWSMTL_HTTP__HOST" "0.0.0.0" }}
{{- $_ := set $env "NEWSMTL_HTTP__PORT" (include "newsmtl.envValue" .Values.httpPort) }}
{{- $_ := set $env "NEWSMTL_SERVICE__SHUTDOWN_GRACE_S" (include "newsmtl.envValue" .Values.shutdown.graceSeconds) }}
{{- if ne .Values.modelBundle.source "packaged" }}
{{- $_ := set $env "NEWSMTL_MODEL__BUNDLE_PATH" (include "newsmtl.bundlePath" .) }}
{{- end }}
{{- if .Values.kafkaTls.secretName }}
{{- $_ := set $env "NEWSMTL_KAFKA__SSL_CAFILE" (printf "%s/%s" (include "newsmtl.kafkaTlsDir" .) .Values.kafkaTls.caKey) }}
{{- if .Values.kafkaTls.certKey }}
{{- $_ := set $env "NEWSMTL_KAFKA__SSL_CERTFILE" (printf "%s/%s" (include "newsmtl.kafkaTlsDir" .) .Values.kafkaTls.certKey) }}
{{- end }}
{{- if .Values.kafkaTls.keyKey }}
{{- $_ := set $env "NEWSMTL_KAFKA__SSL_KEYFILE" (printf "%s/%s" (include "newsmtl.kafkaTlsDir" .) .Values.kafkaTls.keyKey) }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{- define "newsmtl.kafkaTlsDir" -}}
/etc/newsmtl/kafka-tls
{{- end }}

{{- define "newsmtl.bundlePath" -}}
{{- $bundle := .Values.modelBundle }}
{{- if and (eq $bundle.source "pvc") $bundle.pvc.subPath }}
{{- printf "%s/%s" (trimSuffix "/" $bundle.mountPath) (trimPrefix "/" $bundle.pvc.subPath) }}
{{- else if and (eq $bundle.source "imageVolume") (trimAll "/" $bundle.image.path) }}
{{- /* An image volume mounts the whole image filesystem; the bundle sits at image.path in it. */}}
{{- printf "%s/%s" (trimSuffix "/" $bundle.mountPath) (trimAll "/" $bundle.image.path) }}
{{- else }}
{{- $bundle.mountPath }}
{{- end }}
{{- end }}

{{- define "newsmtl.usesSasl" -}}
{{- if hasPrefix "SASL" (toString .Values.config.kafka.securityProtocol) }}true{{- end }}
{{- end }}

{{- define "newsmtl.usesTls" -}}
{{- if has (toString .Values.config.kafka.securityProtocol) (list "SSL" "SASL_SSL") }}true{{- end }}
{{- end }}

{{/*
Cross-field checks that a JSON schema cannot express; included by the workload template.
*/}}
{{- define "newsmtl.validate" -}}
{{- $kafka := .Values.config.kafka }}
{{- if and (include "newsmtl.usesSasl" .) (not .Values.existingSecret.name) }}
{{- fail (printf "config.kafka.securityProtocol %s needs existingSecret.name (a Secret holding key %q)" $kafka.securityProtocol .Values.existingSecret.keys.kafkaSaslPassword) }}
{{- end }}
{{- if and (include "newsmtl.usesSasl" .) (not $kafka.saslMechanism) }}
{{- fail (printf "config.kafka.securityProtocol %s needs config.kafka.saslMechanism" $kafka.securityProtocol) }}
{{- end }}
{{- if and (include "newsmtl.usesSasl" .) (has (toString $kafka.saslMechanism) (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) (not $kafka.saslUsername) }}
{{- fail (printf "config.kafka.saslMechanism %s needs config.kafka.saslUsername" $kafka.saslMechanism) }}
{{- end }}
{{- if and .Values.kafkaTls.secretName (not (include "newsmtl.usesTls" .)) }}
{{- fail "kafkaTls.secretName is set but config.kafka.securityProtocol is neither SSL nor SASL_SSL" }}
{{- end }}
{{- $source := .Values.modelBundle.source }}
{{- if not (has $source (list "packaged" "pvc" "image" "imageVolume")) }}
{{- fail (printf "modelBundle.source must be packaged, pvc, image or imageVolume, got %q" $source) }}
{{- end }}
{{- if and (eq $source "pvc") (not .Values.modelBundle.pvc.claimName) }}
{{- fail "modelBundle.source pvc needs modelBundle.pvc.claimName" }}
{{- end }}
{{- if and (has $source (list "image" "imageVolume")) (not .Values.modelBundle.image.repository) }}
{{- fail (printf "modelBundle.source %s needs modelBundle.image.repository" $source) }}
{{- end }}
{{- if and (has $source (list "image" "imageVolume")) (not (or .Values.modelBundle.image.tag .Values.modelBundle.image.digest)) }}
{{- fail "modelBundle.image needs a tag or a digest (a moving model image would change predictions silently)" }}
{{- end }}
{{- if and .Values.gpu.enabled (eq (toString .Values.config.model.providers) "cpu") }}
{{- fail "gpu.enabled requests GPUs but config.model.providers is cpu; use cuda, tensorrt or auto (see values-gpu.yaml)" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- $as := .Values.autoscaling }}
{{- if gt (int $as.maxReplicas) (int $as.inputPartitions) }}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds autoscaling.inputPartitions (%d): consumers beyond the partition count of %s sit idle" (int $as.maxReplicas) (int $as.inputPartitions) .Values.config.topics.input) }}
{{- end }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)" (int $as.minReplicas) (int $as.maxReplicas)) }}
{{- end }}
{{- if $as.keda.enabled }}
{{- if gt (int $as.keda.fallback.replicas) (int $as.maxReplicas) }}
{{- fail (printf "autoscaling.keda.fallback.replicas (%d) exceeds autoscaling.maxReplicas (%d)" (int $as.keda.fallback.replicas) (int $as.maxReplicas)) }}
{{- end }}
{{- if and (include "newsmtl.usesSasl" .) (not $as.keda.existingTriggerAuthentication) (not (has (toString $kafka.saslMechanism) (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512"))) }}
{{- fail (printf "the chart builds KEDA authentication for PLAIN and SCRAM only; for %s set autoscaling.keda.existingTriggerAuthentication" $kafka.saslMechanism) }}
{{- end }}
{{- else }}
{{- if lt (int $as.minReplicas) 1 }}
{{- fail "autoscaling.minReplicas 0 (scale to zero) needs KEDA: a CPU HPA cannot scale from zero" }}
{{- end }}
{{- if not (and .Values.resources.requests .Values.resources.requests.cpu) }}
{{- fail "the CPU HPA (autoscaling.keda.enabled=false) needs resources.requests.cpu" }}
{{- end }}
{{- end }}
{{- else }}
{{- if gt (int .Values.replicaCount) (int .Values.autoscaling.inputPartitions) }}
{{- fail (printf "replicaCount (%d) exceeds autoscaling.inputPartitions (%d): the extra consumers would sit idle" (int .Values.replicaCount) (int .Values.autoscaling.inputPartitions)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The KEDA SASL mechanism name for the service's Kafka mechanism.
*/}}
{{- define "newsmtl.kedaSasl" -}}
{{- $map := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" "OAUTHBEARER" "oauthbearer" "GSSAPI" "gssapi" }}
{{- get $map (toString .Values.config.kafka.saslMechanism) }}
{{- end }}

{{- define "newsmtl.triggerAuthenticationName" -}}
{{- if .Values.autoscaling.keda.existingTriggerAuthentication }}
{{- .Values.autoscaling.keda.existingTriggerAuthentication }}
{{- else if or (include "newsmtl.usesSasl" .) .Values.kafkaTls.secretName }}
{{- printf "%s-kafka" (include "newsmtl.fullname" .) }}
{{- end }}
{{- end }}
