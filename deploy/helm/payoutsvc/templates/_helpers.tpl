{{/* Kept to the constructs tests/test_deploy.py renders: values, include, toYaml, if. */}}
{{- define "payoutsvc.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "payoutsvc.image" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end }}

{{- define "payoutsvc.env" -}}
- name: PAYOUTSVC_ENVIRONMENT
  value: production
- name: PAYOUTSVC_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.databaseUrl.name }}
      key: {{ .Values.secrets.databaseUrl.key }}
- name: PAYOUTSVC_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.encryptionKey.name }}
      key: {{ .Values.secrets.encryptionKey.key }}
- name: PAYOUTSVC_GATEWAY
  value: {{ .Values.gateway.default | quote }}
- name: PAYOUTSVC_GATEWAY_ROUTES
  value: {{ .Values.gateway.routes | quote }}
- name: PAYOUTSVC_RATE_LIMIT_STORAGE
  value: {{ .Values.rateLimitStorage | quote }}
- name: PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otelEndpoint | quote }}
{{- if .Values.gateway.credentials }}
{{ toYaml .Values.gateway.credentials }}
{{- end }}
{{- if .Values.extraEnv }}
{{ toYaml .Values.extraEnv }}
{{- end }}
{{- end }}
