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

{{/* Metadata of one variant's training object. It carries its Kueue queue label from the start (Kueue
writes queue `default` onto an unlabelled one where that LocalQueue exists); held for its dataset (data.enabled),
Kueue's admission gate keeps Kueue from admitting it until the data Job's `neosft release` lifts the gate. */}}
{{- define "neosft.trainMetadata" -}}
name: {{ include "neosft.trainName" . }}
labels:
  {{- include "neosft.labels" .root | nindent 2 }}
  neosft.io/component: train
  neosft.io/variant: {{ .variant | quote }}
  {{- with .root.Values.queue }}
  kueue.x-k8s.io/queue-name: {{ . | quote }}
  {{- end }}
annotations:
  neosft.io/output: {{ .output | quote }}
  {{- if .root.Values.data.enabled }}
  kueue.x-k8s.io/admission-gated-by: neosft.io/dataset
  {{- end }}
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

{{/* Security contexts: values podSecurityContext and securityContext (OpenShift: unset the fixed IDs). */}}
{{- define "neosft.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "neosft.securityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end }}

{{/* Labels and annotations of one kind of pod: the run's labels, its component, the values' podLabels/podAnnotations. */}}
{{- define "neosft.podMetadata" -}}
labels:
  {{- include "neosft.labels" .root | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  neosft.io/component: {{ .component }}
  {{- with .variant }}
  neosft.io/variant: {{ . | quote }}
  {{- end }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
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

{{/* The training kind: train.kind, or its old name train.backend when set (one release). */}}
{{- define "neosft.kindValue" -}}
{{ .Values.train.backend | default .Values.train.kind }}
{{- end }}

{{/* The training object kind (train.kind), its API group and plural: for RBAC and `neosft release`. */}}
{{- define "neosft.trainKind" -}}
{{ ternary "TrainJob" "PyTorchJob" (eq (include "neosft.kindValue" .) "trainjob") }}
{{- end }}
{{- define "neosft.trainGroup" -}}
{{ ternary "trainer.kubeflow.org" "kubeflow.org" (eq (include "neosft.kindValue" .) "trainjob") }}
{{- end }}
{{- define "neosft.trainPlural" -}}
{{ ternary "trainjobs" "pytorchjobs" (eq (include "neosft.kindValue" .) "trainjob") }}
{{- end }}

{{/* torchrun, up to `-m neosft train`. Rendezvous from the operator's environment: the training
operator sets MASTER_ADDR/MASTER_PORT, Trainer v2's torch plugin PET_MASTER_ADDR/PET_MASTER_PORT; both PET_NODE_RANK. */}}
{{- define "neosft.torchrun" -}}
{{- $t := .Values.train -}}
{{- $master := ternary "PET_MASTER" "MASTER" (eq (include "neosft.kindValue" .) "trainjob") -}}
- torchrun
- {{ printf "--nnodes=%d" (int $t.nodes) | quote }}
- {{ printf "--nproc-per-node=%d" (int $t.gpusPerNode) | quote }}
- --node-rank=$(PET_NODE_RANK)
- {{ printf "--master-addr=$(%s_ADDR)" $master }}
- {{ printf "--master-port=$(%s_PORT)" $master }}
- -m
- neosft
- train
{{- end }}

{{/* The arguments of `neosft train` for one variant: every value quoted. */}}
{{- define "neosft.trainArgs" -}}
{{- $t := .root.Values.train -}}
- {{ printf "--variant=%s" .variant | quote }}
- {{ printf "--data=%s" (include "neosft.dataUri" .root) | quote }}
- {{ printf "--output=%s" .output | quote }}
{{- with $t.model }}
- {{ printf "--model=%s" . | quote }}
{{- end }}
- {{ printf "--method=%s" $t.method | quote }}
{{- $l := $t.lora | default dict }}
{{- if eq $t.method "lora" }}
{{- if not (kindIs "invalid" $l.rank) }}
- {{ printf "--lora-rank=%d" (int $l.rank) | quote }}
{{- end }}
{{- if not (kindIs "invalid" $l.alpha) }}
- {{ printf "--lora-alpha=%d" (int $l.alpha) | quote }}
{{- end }}
{{- if not (kindIs "invalid" $l.dropout) }}
- {{ printf "--lora-dropout=%v" $l.dropout | quote }}
{{- end }}
{{- with $l.target }}
- {{ printf "--lora-target=%s" . | quote }}
{{- end }}
{{- if $t.merge }}
- --merge
{{- end }}
{{- else if $t.merge }}
{{- fail "train.merge merges a LoRA adapter: it needs train.method lora" }}
{{- else if or (not (kindIs "invalid" $l.rank)) (not (kindIs "invalid" $l.alpha))
               (not (kindIs "invalid" $l.dropout)) $l.target }}
{{- fail "train.lora sets a LoRA adapter: it needs train.method lora" }}
{{- end }}
{{- with $t.deepspeed }}
- {{ printf "--deepspeed=%s" . | quote }}
{{- end }}
- {{ printf "--report-to=%s" $t.reportTo | quote }}
{{- if $t.packing }}
- --packing
{{- end }}
{{- if $t.liger }}
- --liger
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
{{- if not .root.Values.eval.enabled }}
- --no-eval
{{- else }}
{{- if not (kindIs "invalid" .root.Values.eval.samples) }}
- {{ printf "--eval-samples=%d" (int .root.Values.eval.samples) | quote }}
{{- end }}
{{- if eq .variant (first .root.Values.variants) }}
- --eval-base
{{- end }}
{{- with .root.Values.eval.benchmarks }}
- {{ printf "--benchmarks=%s" (join "," .) | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := merge (deepCopy (get $t.variantSet .variant | default dict)) $t.set }}
- --set
- {{ printf "%s=%v" $key $value | quote }}
{{- end }}
{{- end }}

{{/* The whole command of one variant's training container (PyTorchJob): torchrun + `neosft train` args. */}}
{{- define "neosft.trainCommand" -}}
{{ include "neosft.torchrun" .root }}
{{ include "neosft.trainArgs" . }}
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
{{- with $t.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* envFrom of a training container: whole Secrets or ConfigMaps (train.envFrom). */}}
{{- define "neosft.trainEnvFrom" -}}
{{- with .Values.train.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
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
  {{- with $t.extraResources }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
limits:
  {{- toYaml $t.resources.limits | nindent 2 }}
  nvidia.com/gpu: {{ $t.gpusPerNode }}
  {{- with $t.extraResources }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
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
{{- with .Values.train.extraVolumeMounts }}
{{ toYaml . }}
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
{{- with $t.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level fields of a training pod, the same under a PyTorchJob and a TrainingRuntime. */}}
{{- define "neosft.trainPodSpec" -}}
{{- $t := .Values.train -}}
automountServiceAccountToken: false
{{ include "neosft.podCommon" . }}
{{- with include "neosft.scheduling" $t | trim }}
{{ . }}
{{- end }}
{{- with $t.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $t.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
volumes:
  {{- include "neosft.trainVolumes" . | nindent 2 }}
{{- end }}

{{/* Annotations of the TrainJob runtime check: a Helm-only pre-install hook, after the runtime (weight 0). */}}
{{- define "neosft.runtimeCheckHook" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
neosft.io/helm-only: "true"
{{- end }}
