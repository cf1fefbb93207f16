{{/* The chart name, or nameOverride. */}}
{{- define "airlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: fullnameOverride, else the release name, with the
chart name appended unless the release name already holds it.
*/}}
{{- define "airlock.fullname" -}}
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

{{- define "airlock.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "airlock.labels" -}}
helm.sh/chart: {{ include "airlock.chart" . }}
{{ include "airlock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: airlock
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "airlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "airlock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "airlock.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: by digest when one is given, else by tag. */}}
{{- define "airlock.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where things are mounted in the pod. */}}
{{- define "airlock.configDir" -}}/etc/airlock{{- end }}
{{- define "airlock.keysDir" -}}/etc/airlock/keys{{- end }}
{{- define "airlock.caDir" -}}/etc/airlock/ca{{- end }}
{{- define "airlock.authDir" -}}/run/secrets/airlock/registry{{- end }}
{{- define "airlock.stateDir" -}}/var/lib/airlock{{- end }}
{{- define "airlock.consoleAuthDir" -}}/run/secrets/airlock/console{{- end }}
{{- define "airlock.clientCertDir" -}}/run/secrets/airlock/client-cert{{- end }}
{{- define "airlock.attestationDir" -}}/run/secrets/airlock/attestation{{- end }}
{{- define "airlock.trustedRootDir" -}}/etc/airlock/trusted-root{{- end }}
{{- define "airlock.imageKeysDir" -}}/etc/airlock/image-keys{{- end }}

{{/* "true" when a public-key value is set (the keys volume is mounted). */}}
{{- define "airlock.hasKeys" -}}
{{- if or .Values.trust.existingSecret .Values.trust.existingConfigMap .Values.trust.publicKeys }}true{{ end }}
{{- end }}

{{/* The kind of drop volume: claim (existing or created), hostPath or nfs. */}}
{{- define "airlock.dropKind" -}}
{{- $kinds := list }}
{{- if .Values.drop.existingClaim }}{{ $kinds = append $kinds "existingClaim" }}{{ end }}
{{- if .Values.drop.hostPath }}{{ $kinds = append $kinds "hostPath" }}{{ end }}
{{- if or .Values.drop.nfs.server .Values.drop.nfs.path }}{{ $kinds = append $kinds "nfs" }}{{ end }}
{{- if gt (len $kinds) 1 }}
{{- fail (printf "drop: choose one of drop.existingClaim, drop.hostPath and drop.nfs, not %s" (join " and " $kinds)) }}
{{- end }}
{{- if eq (len $kinds) 1 }}
{{- if and (eq (first $kinds) "nfs") (not (and .Values.drop.nfs.server .Values.drop.nfs.path)) }}
{{- fail "drop.nfs needs both drop.nfs.server and drop.nfs.path" }}
{{- end }}
{{- first $kinds }}
{{- else if .Values.drop.persistence.enabled }}
{{- print "persistence" }}
{{- else }}
{{- fail "drop: set drop.existingClaim, drop.hostPath or drop.nfs, or enable drop.persistence" }}
{{- end }}
{{- end }}

{{/* Whether airlock polls the drop directory: drop.poll, else on for NFS and hostPath. */}}
{{- define "airlock.dropPoll" -}}
{{- if kindIs "bool" .Values.drop.poll }}
{{- .Values.drop.poll }}
{{- else }}
{{- has (include "airlock.dropKind" .) (list "nfs" "hostPath") }}
{{- end }}
{{- end }}

{{/* The state volume: an existing claim, a created one, or nothing (emptyDir). */}}
{{- define "airlock.stateClaim" -}}
{{- if .Values.state.existingClaim }}
{{- .Values.state.existingClaim }}
{{- else if .Values.state.persistence.enabled }}
{{- printf "%s-state" (include "airlock.fullname" .) }}
{{- end }}
{{- end }}

{{/* Whether a PodDisruptionBudget is rendered. */}}
{{- define "airlock.pdbEnabled" -}}
{{- if kindIs "bool" .Values.podDisruptionBudget.enabled }}
{{- .Values.podDisruptionBudget.enabled }}
{{- else }}
{{- gt (int .Values.replicaCount) 1 }}
{{- end }}
{{- end }}

{{/* The CA certificate's file name in the pod, when one is configured. */}}
{{- define "airlock.caFile" -}}
{{- if or .Values.registry.caCert.existingSecret .Values.registry.caCert.existingConfigMap }}
{{- printf "%s/%s" (include "airlock.caDir" .) .Values.registry.caCert.key }}
{{- end }}
{{- end }}

{{/*
airlock.yaml: what the chart derives from the values, with .Values.config
merged over it.
*/}}
{{- define "airlock.config" -}}
{{- $registry := dict "target" .Values.registry.target "plain_http" .Values.registry.plainHttp }}
{{- if .Values.registry.auth.existingSecret }}
{{- $_ := set $registry "auth_file" (printf "%s/config.json" (include "airlock.authDir" .)) }}
{{- end }}
{{- with include "airlock.caFile" . }}
{{- $_ := set $registry "ca_cert" (list .) }}
{{- end }}
{{- if .Values.registry.clientCert.existingSecret }}
{{- $_ := set $registry "client_cert" (printf "%s/tls.crt" (include "airlock.clientCertDir" .)) }}
{{- $_ := set $registry "client_key" (printf "%s/tls.key" (include "airlock.clientCertDir" .)) }}
{{- end }}
{{- $drop := dict "dirs" (list .Values.drop.mountPath) "poll" (eq (include "airlock.dropPoll" .) "true") }}
{{- $imports := dict }}
{{- if .Values.drop.readOnly }}
{{- $_ := set $imports "on_success" "keep" }}
{{- $_ := set $imports "on_reject" "keep" }}
{{- end }}
{{- $config := dict
  "drop" $drop
  "trust" (include "airlock.trustConfig" . | fromYaml)
  "registry" $registry
  "state_dir" (include "airlock.stateDir" .)
  "http" (include "airlock.httpConfig" . | fromYaml)
  "kube" (dict "enabled" .Values.kube.enabled "lease_duration" .Values.kube.leaseDuration "events" .Values.kube.events)
}}
{{- if $imports }}
{{- $_ := set $config "imports" $imports }}
{{- end }}
{{- with .Values.attestations.signingKey }}
{{- if .existingSecret }}
{{- $_ := set $config "attestations" (dict "signing_key" (printf "%s/%s" (include "airlock.attestationDir" $) .key)) }}
{{- end }}
{{- end }}
{{- toYaml (mustMergeOverwrite $config (deepCopy .Values.config)) }}
{{- end }}

{{/* The trust section of airlock.yaml: the mounted public keys, and a
keyless entry per signer against the mounted trusted root. */}}
{{- define "airlock.trustConfig" -}}
{{- $keys := list }}
{{- if include "airlock.hasKeys" . }}
{{- $keys = list (include "airlock.keysDir" .) }}
{{- end }}
{{- $trust := dict "public_keys" $keys }}
{{- with .Values.trust.keyless }}
{{- if .signers }}
{{- $root := printf "%s/%s" (include "airlock.trustedRootDir" $) .trustedRoot.key }}
{{- $entries := list }}
{{- range .signers }}
{{- $entries = append $entries (dict "trusted_root" $root "identity" .identity "issuer" .issuer) }}
{{- end }}
{{- $_ := set $trust "keyless" $entries }}
{{- end }}
{{- end }}
{{- with .Values.trust.imageSignatures.rules }}
{{- $rules := list }}
{{- range $i, $rule := . }}
{{- $entry := dict "images" $rule.images "policy" $rule.policy }}
{{- if $rule.keysConfigMap }}
{{- $_ := set $entry "keys" (list (printf "%s/%d" (include "airlock.imageKeysDir" $) $i)) }}
{{- end }}
{{- $rules = append $rules $entry }}
{{- end }}
{{- $_ := set $trust "image_signatures" $rules }}
{{- end }}
{{- toYaml $trust }}
{{- end }}

{{/* The http section of airlock.yaml: the listener and, with
console.auth.existingSecret, basic auth from the mounted htpasswd file. */}}
{{- define "airlock.httpConfig" -}}
{{- $http := dict "listen" (printf "0.0.0.0:%d" (int (include "airlock.httpPort" .))) }}
{{- with .Values.console.auth }}
{{- if .existingSecret }}
{{- $_ := set $http "auth" (dict "htpasswd_file" (printf "%s/%s" (include "airlock.consoleAuthDir" $) .key) "open_paths" .openPaths) }}
{{- end }}
{{- end }}
{{- toYaml $http }}
{{- end }}

{{/* The container's HTTP port (airlock's default http.listen port). */}}
{{- define "airlock.httpPort" -}}9090{{- end }}

{{/* Checks what no schema can: values that only make sense together. */}}
{{- define "airlock.validate" -}}
{{- $_ := required "registry.target is required: where content is imported, e.g. --set registry.target=harbor.local/spectro-images" .Values.registry.target }}
{{- $trust := 0 }}
{{- if .Values.trust.existingSecret }}{{ $trust = add1 $trust }}{{ end }}
{{- if .Values.trust.existingConfigMap }}{{ $trust = add1 $trust }}{{ end }}
{{- if .Values.trust.publicKeys }}{{ $trust = add1 $trust }}{{ end }}
{{- $signers := .Values.trust.keyless.signers }}
{{- if or (gt (int $trust) 1) (and (eq (int $trust) 0) (not $signers)) }}
{{- fail "trust: set exactly one of trust.existingSecret, trust.existingConfigMap and trust.publicKeys (the public keys bundles must be signed with), or trust.keyless.signers, or both" }}
{{- end }}
{{- if and $signers (not .Values.trust.keyless.trustedRoot.existingConfigMap) }}
{{- fail "trust.keyless.signers needs trust.keyless.trustedRoot.existingConfigMap: the ConfigMap holding the Sigstore trusted_root.json their certificates chain to" }}
{{- end }}
{{- range $i, $rule := .Values.trust.imageSignatures.rules }}
{{- if and (ne $rule.policy "ignore") (not $rule.keysConfigMap) }}
{{- fail (printf "trust.imageSignatures.rules[%d] (policy %s) needs keysConfigMap: a ConfigMap of the PEM public keys its images must be signed with" $i $rule.policy) }}
{{- end }}
{{- end }}
{{- range $i, $signer := $signers }}
{{- if not (and $signer.identity $signer.issuer) }}
{{- fail (printf "trust.keyless.signers[%d] needs both identity and issuer (the certificate's SAN and OIDC issuer, matched exactly)" $i) }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.host is required with ingress.enabled: the host name the console answers on" }}
{{- end }}
{{- if and .Values.registry.caCert.existingSecret .Values.registry.caCert.existingConfigMap }}
{{- fail "registry.caCert: set existingSecret or existingConfigMap, not both" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (include "airlock.stateClaim" .) }}
{{- fail "state: with replicaCount > 1 each pod keeps its own state (leave state.existingClaim empty and state.persistence.enabled false); the Leases carry what replicas share" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (eq (include "airlock.dropKind" .) "persistence") (not (has "ReadWriteMany" .Values.drop.persistence.accessModes)) }}
{{- fail "drop: replicaCount > 1 needs a volume every pod can mount: drop.existingClaim (ReadWriteMany), drop.nfs, or drop.persistence.accessModes [ReadWriteMany]" }}
{{- end }}
{{- end }}
