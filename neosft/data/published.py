"""What REILX published (the Hub's LFS pointers): the corpus the scripts read and each variant's file.

A build whose source has the corpus's sha256 compares each variant's bytes with REILX's file, so one build
with network checks the reproduction (`Manifest.variants[name].published`). Nothing here downloads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from neosft.artifacts import PublishedMatch


@dataclass(frozen=True)
class PublishedFile:
    uri: str
    sha256: str
    bytes: int | None  # None: not known to the byte


SOURCE = PublishedFile(
    "hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json",
    "ecf7db718c702076143b707df8bff2f8a36e838752fb1051670a2d579cedeb22",
    245_698_327,
)
FILES = {
    "conversations": PublishedFile(
        "hf://datasets/REILX/neo_sft_phase2_conversations/neo_sft_phase2_conversations.jsonl",
        "ac208cef008878bd5431b8fbd1d2a47905e26ae53c82eb04b46e460a96d4d23e",
        324_187_248,
    ),
    "multi": PublishedFile(
        "hf://datasets/REILX/neo_sft_phase2_multi/neo_sft_phase2_multi.jsonl",
        "797c26f3447750889d70a0efa7925eddde5b3fc1834add0468d7a5cb369ef346",
        None,
    ),  # about 220 MB
    "single": PublishedFile(
        "hf://datasets/REILX/neo_sft_phase2_single/neo_sft_phase2_conversation2.jsonl",
        "aff36425174751289870e39acaaa1c643adc3cd8508e8e21976f729ef2cac094",
        141_562_628,
    ),
}


def compare(source_sha256: str, variant: str, sha256: str, size: int) -> PublishedMatch | None:
    """How variant `variant`'s bytes (all its parts, in order) compare with REILX's file, when the source is
    the corpus REILX converted and REILX published that variant; else None."""
    published = FILES.get(variant)
    if source_sha256 != SOURCE.sha256 or published is None:
        return None
    equal = sha256 == published.sha256 and (published.bytes is None or size == published.bytes)
    return PublishedMatch(published.uri, published.sha256, published.bytes, equal)
