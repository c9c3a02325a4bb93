"""The small ShareGPT corpus shipped with neosft for the embedded default and the tests."""

from pathlib import Path

SAMPLE_CORPUS = Path(__file__).with_name("neo_sft_sample.json")
