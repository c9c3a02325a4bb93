"""`neosft train`: full fine-tuning of Qwen2 on one variant's dataset, with DeepSpeed, loss logs and resumable
checkpoints in object storage. `recipe.fine_tune` is the entry point; the other modules are its steps."""

DEFAULT_MODEL = "Qwen/Qwen2-7B-Instruct"
