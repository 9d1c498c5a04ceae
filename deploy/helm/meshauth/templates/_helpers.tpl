{{/* The release's name prefix: the release name, with the chart's name unless it contains it. */}}
{{- define "meshauth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; call with (list $ "component"). */}}
{{- define "meshauth.labels" -}}
{{ include "meshauth.selector" . }}
app.kubernetes.io/part-of: meshauth
app.kubernetes.io/managed-by: {{ (index . 0).Release.Service }}
helm.sh/chart: {{ printf "%s-%s" (index . 0).Chart.Name (index . 0).Chart.Version }}
{{- end -}}

{{/* The labels that select a component's pods; call with (list $ "component"). */}}
{{- define "meshauth.selector" -}}
app.kubernetes.io/name: meshauth-{{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end -}}

{{- define "meshauth.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "meshauth.issuerURL" -}}
{{- .Values.issuer.url | default (printf "https://%s-issuer.%s.svc.cluster.local:8443" (include "meshauth.fullname" .) .Release.Namespace) -}}
{{- end -}}

{{/* The NATS URL meshauth uses: the release's cluster, nats.url, or none. */}}
{{- define "meshauth.natsURL" -}}
{{- if and .Values.nats.enabled .Values.nats.url -}}
{{- fail "nats: set enabled (a NATS cluster in the release) or url (yours), not both" -}}
{{- else if .Values.nats.enabled -}}
nats://{{ include "meshauth.fullname" . }}-nats.{{ .Release.Namespace }}.svc.cluster.local:4222
{{- else -}}
{{- .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* The TLS Secret of a component; call with (list $ "component" .Values.<component>.tls). */}}
{{- define "meshauth.tlsSecret" -}}
{{- $tls := index . 2 -}}
{{- if $tls.certManager.enabled -}}
{{ include "meshauth.fullname" (index . 0) }}-{{ index . 1 }}-tls
{{- else -}}
{{ required (printf "%s.tls.secretName: name your kubernetes.io/tls Secret, or turn on %s.tls.certManager" (index . 1) (index . 1)) $tls.secretName }}
{{- end -}}
{{- end -}}

{{/* A cert-manager Certificate; call with (list $ "component" .Values.<component>.tls (list dnsName ...) (list usage ...)). */}}
{{- define "meshauth.certificate" -}}
{{- $ := index . 0 -}}
{{- $tls := index . 2 -}}
{{- if $tls.certManager.enabled }}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ include "meshauth.fullname" $ }}-{{ index . 1 }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "meshauth.labels" (list $ (index . 1)) | nindent 4 }}
spec:
  secretName: {{ include "meshauth.tlsSecret" . }}
  dnsNames:
    {{- toYaml (index . 3) | nindent 4 }}
  usages:
    {{- toYaml (index . 4) | nindent 4 }}
  duration: {{ $tls.certManager.duration }}
  renewBefore: {{ $tls.certManager.renewBefore }}
  privateKey:
    algorithm: ECDSA
    size: 256
  issuerRef:
    {{- toYaml $tls.certManager.issuerRef | nindent 4 }}
{{- end }}
{{- end -}}

{{/* The security context of every meshauth container. */}}
{{- define "meshauth.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: { drop: [ALL] }
{{- end -}}

{{/* The pod security context of the distroless image's nonroot user. */}}
{{- define "meshauth.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile: { type: RuntimeDefault }
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
