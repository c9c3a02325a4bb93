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
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
neosft.io/run-id: {{ include "neosft.runId" . | quote }}
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

{{/* The dataset this run trains on: data.uri, else a folder of this run's own. */}}
{{- define "neosft.dataUri" -}}
{{- if .Values.data.uri -}}
{{ .Values.data.uri }}
{{- else if .Values.data.enabled -}}
{{ include "neosft.s3root" . }}/data/{{ include "neosft.runId" . }}
{{- else -}}
{{ fail "data.enabled is false: set data.uri to the dataset to train on (neosft submit --data URI)" }}
{{- end -}}
{{- end }}

{{/* Names of the training objects, one per variant. */}}
{{- define "neosft.trainName" -}}
{{ include "neosft.fullname" .root }}-{{ .variant | replace "_" "-" }}
{{- end }}

{{- define "neosft.image" -}}
{{ printf "%s:%s" .image.repository (.image.tag | default .chart.AppVersion) | quote }}
{{- end }}

{{/* S3 settings; the keys come only from the Secret, through secretKeyRef. */}}
{{- define "neosft.s3Env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.secretName | quote }}
      key: {{ .Values.s3.accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.secretName | quote }}
      key: {{ .Values.s3.secretAccessKeyKey | quote }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
{{- with .Values.s3.endpoint }}
- name: NEOSFT_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Hugging Face Hub settings; the token comes only from its Secret. */}}
{{- define "neosft.hfEnv" -}}
{{- with .Values.huggingface.tokenSecret.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.huggingface.tokenSecret.key | quote }}
{{- end }}
{{- with .Values.huggingface.endpoint }}
- name: HF_ENDPOINT
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
serviceAccountName: {{ include "neosft.serviceAccountName" . | quote }}
securityContext:
  {{- include "neosft.podSecurityContext" . | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . | quote }}
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

{{/* The training object kind, and its API group and plural (for RBAC and `neosft release`). */}}
{{- define "neosft.trainKind" -}}PyTorchJob{{- end }}
{{- define "neosft.trainGroup" -}}kubeflow.org{{- end }}
{{- define "neosft.trainPlural" -}}pytorchjobs{{- end }}

{{/* torchrun + `neosft train` for one variant: every value quoted. */}}
{{- define "neosft.trainCommand" -}}
{{- $t := .root.Values.train -}}
- torchrun
- {{ printf "--nnodes=%d" (int $t.nodes) | quote }}
- {{ printf "--nproc-per-node=%d" (int $t.gpusPerNode) | quote }}
- --node-rank=$(PET_NODE_RANK)
- --master-addr=$(MASTER_ADDR)
- --master-port=$(MASTER_PORT)
- -m
- neosft
- train
- {{ printf "--variant=%s" .variant | quote }}
- {{ printf "--data=%s" (include "neosft.dataUri" .root) | quote }}
- {{ printf "--output=%s" .output | quote }}
{{- with $t.model }}
- {{ printf "--model=%s" . | quote }}
{{- end }}
{{- with $t.deepspeed }}
- {{ printf "--deepspeed=%s" . | quote }}
{{- end }}
{{- if $t.packing }}
- --packing
{{- end }}
{{- with $t.maxSteps }}
- {{ printf "--max-steps=%d" (int .) | quote }}
{{- end }}
{{- with $t.saveSteps }}
- {{ printf "--save-steps=%d" (int .) | quote }}
{{- end }}
{{- if not (kindIs "invalid" $t.valSize) }}
- {{ printf "--val-size=%v" $t.valSize | quote }}
{{- end }}
{{- range $key, $value := merge (deepCopy (get $t.variantSet .variant | default dict)) $t.set }}
- --set
- {{ printf "%s=%v" $key $value | quote }}
{{- end }}
{{- end }}

{{/* Environment of a training container: S3, Hub, scratch space, NCCL. */}}
{{- define "neosft.trainEnv" -}}
{{- $t := .Values.train -}}
{{ include "neosft.s3Env" . }}
{{- include "neosft.hfEnv" . }}
- name: NEOSFT_WORK_DIR
  value: /scratch/neosft
- name: HF_HOME
  value: {{ ternary "/cache/huggingface" "/scratch/huggingface" (not (empty $t.modelCacheClaim)) | quote }}
{{- range $name, $value := $t.env }}
- name: {{ $name | quote }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Requests and limits of a training container: GPUs, and node disk for an emptyDir work volume. */}}
{{- define "neosft.trainResources" -}}
{{- $t := .Values.train -}}
{{- $disk := eq $t.workVolume.type "emptyDir" -}}
requests:
  {{- toYaml $t.resources.requests | nindent 2 }}
  nvidia.com/gpu: {{ $t.gpusPerNode }}
  {{- if $disk }}
  ephemeral-storage: {{ $t.workVolume.size | quote }}
  {{- end }}
limits:
  {{- toYaml $t.resources.limits | nindent 2 }}
  nvidia.com/gpu: {{ $t.gpusPerNode }}
{{- end }}

{{- define "neosft.trainMounts" -}}
- name: dshm
  mountPath: /dev/shm
- name: scratch
  mountPath: /scratch
{{- if .Values.train.modelCacheClaim }}
- name: model-cache
  mountPath: /cache/huggingface
{{- end }}
{{- end }}

{{/* /dev/shm in memory, the work volume, the optional model cache. */}}
{{- define "neosft.trainVolumes" -}}
{{- $t := .Values.train -}}
{{- $w := $t.workVolume -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $t.shmSize | quote }}
- name: scratch
{{- if eq $w.type "ephemeral" }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          neosft.io/run-id: {{ include "neosft.runId" . | quote }}
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $w.storageClassName }}
        storageClassName: {{ . | quote }}
        {{- end }}
        resources:
          requests:
            storage: {{ $w.size | quote }}
{{- else if eq $w.type "claim" }}
  persistentVolumeClaim:
    claimName: {{ required "train.workVolume.claimName is required with type claim" $w.claimName | quote }}
{{- else }}
  emptyDir:
    sizeLimit: {{ $w.size | quote }}
{{- end }}
{{- with $t.modelCacheClaim }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ . | quote }}
{{- end }}
{{- end }}
