{{/* The run id: runId, or the release name. */}}
{{- define "neosft.runId" -}}
{{- $id := .Values.runId | default .Release.Name -}}
{{- if gt (len $id) 30 -}}
{{- fail (printf "run id %q is longer than 30 characters: set runId" $id) -}}
{{- end -}}
{{- $id -}}
{{- end }}

{{/* Prefix of every object name of this run. */}}
{{- define "neosft.fullname" -}}
neosft-{{ include "neosft.runId" . }}
{{- end }}

{{/* Labels of every object and pod; neosft.io/run-id is what `neosft status|logs|delete` select on. */}}
{{- define "neosft.labels" -}}
app.kubernetes.io/name: neosft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
neosft.io/run-id: {{ include "neosft.runId" . }}
{{- end }}

{{- define "neosft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ include "neosft.fullname" . }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end }}

{{/* s3://bucket/prefix */}}
{{- define "neosft.s3root" -}}
{{- if .Values.s3.prefix -}}
s3://{{ .Values.s3.bucket }}/{{ .Values.s3.prefix }}
{{- else -}}
s3://{{ .Values.s3.bucket }}
{{- end -}}
{{- end }}

{{- define "neosft.dataUri" -}}
{{ include "neosft.s3root" . }}/data
{{- end }}

{{- define "neosft.image" -}}
{{ .image.repository }}:{{ .image.tag | default .chart.AppVersion }}
{{- end }}

{{/* S3 settings; the keys come only from the Secret, through secretKeyRef. */}}
{{- define "neosft.s3Env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.secretName }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.secretName }}
      key: {{ .Values.s3.secretAccessKeyKey }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
{{- with .Values.s3.endpoint }}
- name: NEOSFT_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "neosft.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "neosft.securityContext" -}}
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{/* Pod-level fields shared by every pod: account, security, pull secrets. */}}
{{- define "neosft.podCommon" -}}
serviceAccountName: {{ include "neosft.serviceAccountName" . }}
securityContext:
  {{- include "neosft.podSecurityContext" . | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* nodeSelector, tolerations and affinity of one pod kind (.Values.data or .Values.train). */}}
{{- define "neosft.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Small requests and limits of the init and test containers. */}}
{{- define "neosft.smallResources" -}}
requests:
  cpu: 100m
  memory: 256Mi
limits:
  cpu: 500m
  memory: 512Mi
{{- end }}
