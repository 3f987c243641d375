{{/* The release's base name, at most 63 characters. */}}
{{- define "etter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "etter.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The selector of one component (server or worker). */}}
{{- define "etter.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "etter.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "etter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "etter.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "etter.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-env" (include "etter.fullname" .)) -}}
{{- end -}}

{{/* Environment both binaries share: the configuration file, TLS, and the secrets. */}}
{{- define "etter.env" -}}
- name: ETTER_CONFIG
  value: /etc/etter/etter.toml
{{- if .Values.tls.secretName }}
- name: ETTER_SERVER__TLS__CERT_FILE
  value: /etc/etter/tls/tls.crt
- name: ETTER_SERVER__TLS__KEY_FILE
  value: /etc/etter/tls/tls.key
- name: ETTER_WORKER__METRICS_TLS__CERT_FILE
  value: /etc/etter/tls/tls.crt
- name: ETTER_WORKER__METRICS_TLS__KEY_FILE
  value: /etc/etter/tls/tls.key
{{- if .Values.tls.clientCaSecretName }}
- name: ETTER_SERVER__TLS__CLIENT_CA_FILE
  value: /etc/etter/client-ca/ca.crt
{{- end }}
{{- else if .Values.tls.terminatedInFront }}
- name: ETTER_SERVER__TLS__TERMINATED_IN_FRONT
  value: "true"
- name: ETTER_WORKER__METRICS_TLS__TERMINATED_IN_FRONT
  value: "true"
{{- end }}
{{- end -}}

{{- define "etter.envFrom" -}}
{{- if or .Values.existingSecret .Values.secrets }}
- secretRef:
    name: {{ include "etter.secretName" . }}
{{- end }}
{{- end -}}

{{/* Volumes both binaries mount: the configuration, the certificates, a writable /tmp. */}}
{{- define "etter.volumes" -}}
- name: config
  configMap:
    name: {{ include "etter.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- if .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- if and .Values.tls.secretName .Values.tls.clientCaSecretName }}
- name: client-ca
  secret:
    secretName: {{ .Values.tls.clientCaSecretName }}
{{- end }}
{{- end -}}

{{- define "etter.volumeMounts" -}}
- name: config
  mountPath: /etc/etter/etter.toml
  subPath: etter.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.secretName }}
- name: tls
  mountPath: /etc/etter/tls
  readOnly: true
{{- end }}
{{- if and .Values.tls.secretName .Values.tls.clientCaSecretName }}
- name: client-ca
  mountPath: /etc/etter/client-ca
  readOnly: true
{{- end }}
{{- end -}}
