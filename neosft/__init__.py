"""neosft: supervised fine-tuning of Qwen2 on Kubernetes, from chat data to checkpoints in object storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neosft")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
