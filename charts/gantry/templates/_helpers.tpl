{{/*
Names and labels, as `helm create` makes them.
*/}}
{{- define "gantry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gantry.fullname" -}}
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

{{- define "gantry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gantry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gantry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gantry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end }}

{{- define "gantry.serviceAccountName" -}}
{{- if .Values.hub.serviceAccount.create }}
{{- default (include "gantry.fullname" .) .Values.hub.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.hub.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gantry.image" -}}
{{- printf "%s:%s" .Values.hub.image.name (default .Chart.AppVersion .Values.hub.image.tag) }}
{{- end }}

{{/*
Paths inside the container. The Dockerfile creates the mount points.
*/}}
{{- define "gantry.configPath" -}}/etc/gantry/gantry.toml{{- end }}
{{- define "gantry.secretsDir" -}}/etc/gantry/secrets{{- end }}
{{- define "gantry.dataDir" -}}/var/lib/gantry{{- end }}
{{- define "gantry.dockerTlsDir" -}}/etc/gantry/docker-tls{{- end }}

{{/*
The origin browsers see: hub.publicUrl, else the first Ingress or HTTPRoute host, else empty.
*/}}
{{- define "gantry.publicUrl" -}}
{{- if .Values.hub.publicUrl }}
{{- .Values.hub.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := first .Values.ingress.hosts }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}
{{- if has $host (default list .hosts) }}{{ $tls = true }}{{ end }}
{{- end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostnames }}
{{- printf "https://%s" (first .Values.httpRoute.hostnames) }}
{{- end }}
{{- end }}

{{/*
Whether any OpenID provider has a client secret, which is then mounted as a file.
*/}}
{{- define "gantry.hasClientSecrets" -}}
{{- range $id, $p := .Values.auth.oidc }}
{{- if or $p.clientSecret $p.existingSecret }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Whether the PostgreSQL URL comes from the chart's Secret (hub.db.url) or a Secret of yours.
*/}}
{{- define "gantry.dbUrlSecret" -}}
{{- if .Values.hub.db.existingSecret.name -}}
{{ .Values.hub.db.existingSecret.name }}
{{- else -}}
{{ include "gantry.fullname" . }}
{{- end }}
{{- end }}
{{- define "gantry.dbUrlKey" -}}
{{- if .Values.hub.db.existingSecret.name -}}
{{ .Values.hub.db.existingSecret.key }}
{{- else -}}
database-url
{{- end }}
{{- end }}

{{/*
Helm reads every number in values as a float, and toToml writes a float with a fraction
(14.0), which gantry's integer keys refuse. "gantry.wholeNumbers" walks a map in place and turns
every whole-valued float into an integer; a fraction (cpu_limit = 0.5) stays a float. Lists are
rebuilt, since they cannot be changed in place.
*/}}
{{- define "gantry.wholeNumbers" -}}
{{- $m := . }}
{{- range $k, $v := $m }}
{{- if kindIs "float64" $v }}
{{- if eq $v (float64 (int64 $v)) }}{{ $_ := set $m $k (int64 $v) }}{{ end }}
{{- else if kindIs "map" $v }}
{{- include "gantry.wholeNumbers" $v }}
{{- else if kindIs "slice" $v }}
{{- $box := dict "in" $v }}
{{- include "gantry.wholeNumbersList" $box }}
{{- $_ := set $m $k $box.out }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gantry.wholeNumbersList" -}}
{{- $out := list }}
{{- range $v := .in }}
{{- if kindIs "float64" $v }}
{{- if eq $v (float64 (int64 $v)) }}{{ $v = int64 $v }}{{ end }}
{{- else if kindIs "map" $v }}
{{- include "gantry.wholeNumbers" $v }}
{{- else if kindIs "slice" $v }}
{{- $box := dict "in" $v }}
{{- include "gantry.wholeNumbersList" $box }}
{{- $v = $box.out }}
{{- end }}
{{- $out = append $out $v }}
{{- end }}
{{- $_ := set . "out" $out }}
{{- end }}

{{/*
The configuration file, as TOML: the curated values mapped onto the file's keys, then
hub.config merged over it.
*/}}
{{- define "gantry.config" -}}
{{- $v := .Values }}
{{- $hub := dict
  "bind" (printf "0.0.0.0:%d" (int $v.hub.port))
  "data_dir" (include "gantry.dataDir" .)
  "session_days" $v.hub.sessionDays
  "log_format" $v.hub.logFormat
}}
{{- with (include "gantry.publicUrl" .) }}
{{- $_ := set $hub "public_url" . }}
{{- end }}
{{- $proxy := dict
  "header_timeout_secs" $v.proxy.headerTimeoutSecs
  "upstream_connect_timeout_secs" $v.proxy.upstreamConnectTimeoutSecs
  "proxy_timeout_secs" $v.proxy.proxyTimeoutSecs
  "max_header_bytes" $v.proxy.maxHeaderBytes
}}
{{- with $v.proxy.trustedDownstream }}
{{- $_ := set $proxy "trusted_downstream" . }}
{{- end }}
{{- $auth := dict
  "username_case" $v.auth.usernameCase
  "local" (dict
    "enabled" $v.auth.local.enabled
    "signup" $v.auth.local.signup
    "min_password_length" $v.auth.local.minPasswordLength)
}}
{{- $oidc := dict }}
{{- range $id, $p := $v.auth.oidc }}
{{- $o := dict "issuer_url" $p.issuerUrl "client_id" $p.clientId }}
{{- if or $p.clientSecret $p.existingSecret }}
{{- $_ := set $o "client_secret_file" (printf "%s/oidc-%s" (include "gantry.secretsDir" $) $id) }}
{{- end }}
{{- range $from, $to := dict
  "displayName" "display_name"
  "redirectUrl" "redirect_url"
  "scopes" "scopes"
  "usernameClaim" "username_claim"
  "groupsClaim" "groups_claim"
  "allowedGroups" "allowed_groups"
  "adminGroups" "admin_groups"
  "allowAll" "allow_all"
  "uidClaim" "uid_claim"
  "gidClaim" "gid_claim"
  "fetchUserinfo" "fetch_userinfo"
  "httpTimeoutSecs" "http_timeout_secs"
}}
{{- if hasKey $p $from }}{{ $_ := set $o $to (get $p $from) }}{{ end }}
{{- end }}
{{- $_ := set $oidc $id $o }}
{{- end }}
{{- if $oidc }}
{{- $_ := set $auth "oidc" $oidc }}
{{- end }}
{{- $cfg := dict "hub" $hub "proxy" $proxy "auth" $auth }}
{{- with $v.singleuser.docker.config }}
{{- $_ := set $cfg "docker" (deepCopy .) }}
{{- end }}
{{- with $v.singleuser.mesos.config }}
{{- $_ := set $cfg "mesos" (deepCopy .) }}
{{- end }}
{{- $profiles := dict }}
{{- range $p := $v.singleuser.profileList }}
{{- if hasKey $profiles $p.slug }}
{{- fail (printf "singleuser.profileList: the slug %q is used twice" $p.slug) }}
{{- end }}
{{- $_ := set $profiles $p.slug (omit (deepCopy $p) "slug") }}
{{- end }}
{{- if $profiles }}
{{- $_ := set $cfg "profiles" $profiles }}
{{- end }}
{{- include "gantry.merge" (dict "dst" $cfg "src" (deepCopy $v.hub.config)) }}
{{- include "gantry.wholeNumbers" $cfg }}
{{- toToml $cfg }}
{{- end }}

{{/*
Deep merge of src into dst, in place: tables merge key by key, anything else (false, 0 and ""
included, which sprig's merge functions would skip) replaces.
*/}}
{{- define "gantry.merge" -}}
{{- $dst := .dst }}
{{- range $k, $sv := .src }}
{{- $dv := get $dst $k }}
{{- if and (kindIs "map" $sv) (kindIs "map" $dv) }}
{{- include "gantry.merge" (dict "dst" $dv "src" $sv) }}
{{- else }}
{{- $_ := set $dst $k $sv }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The container's environment: where the configuration file is, the admin token and the
PostgreSQL URL from their Secrets, the Docker engine's address and TLS settings, and
hub.extraEnv.
*/}}
{{- define "gantry.env" -}}
{{- $hub := .Values.hub }}
{{- $docker := .Values.singleuser.docker }}
# Every gantry command finds the file, `kubectl exec ... gantry user add` included.
- name: GANTRY_CONFIG
  value: {{ include "gantry.configPath" . }}
# The first admin's API token, for automation; generated once, kept across upgrades.
- name: GANTRY_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "gantry.fullname" . }}
      key: admin-token
{{- if eq $hub.db.type "postgres" }}
- name: GANTRY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "gantry.dbUrlSecret" . }}
      key: {{ include "gantry.dbUrlKey" . }}
{{- end }}
{{- with $docker.host }}
- name: DOCKER_HOST
  value: {{ . | quote }}
{{- end }}
{{- if $docker.tlsSecret }}
- name: DOCKER_CERT_PATH
  value: {{ include "gantry.dockerTlsDir" . }}
- name: DOCKER_TLS_VERIFY
  value: "1"
{{- end }}
{{- range $name, $value := $hub.extraEnv }}
- name: {{ $name }}
  {{- if kindIs "map" $value }}
  {{- toYaml $value | nindent 2 }}
  {{- else }}
  value: {{ $value | toString | quote }}
  {{- end }}
{{- end }}
{{- end }}
