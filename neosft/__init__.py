"""neosft: supervised fine-tuning of Qwen2 on Kubernetes, from chat data to checkpoints in object storage."""

__version__ = "0.1.0"
