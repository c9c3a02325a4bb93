"""The artifact contracts: each file other tools read, as a type with its only writer and reader."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import orjson

from neosft.errors import UserError
from neosft.storage import Location, location

# manifest.json ----------------------------------------------------------------------------------

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SourceInfo:
    """What the build read: `uri` as given, the resolved `revision` (a Hub commit sha), and the stored
    bytes' sha256 and size, with the number of records in them."""

    uri: str
    sha256: str
    bytes: int
    records: int
    revision: str | None = None


@dataclass(frozen=True)
class VariantData:
    """One variant's dataset: its rows in `files` (paths relative to the dataset folder, in order) and the
    sha256 of those files concatenated; `stats` holds the length statistics (see `neosft.data.stats`)."""

    rows: int
    files: list[str]
    sha256: str
    has_system: bool
    stats: dict


@dataclass(frozen=True)
class Manifest:
    """DEST/manifest.json: written last by `neosft data build`; a reader reads only the parts it names."""

    source: SourceInfo
    options: dict
    skipped: dict[str, int]
    kept: int
    variants: dict[str, VariantData]
    parts: str  # the folder under DEST that holds this build's parts: DEST/<parts>/<variant>/part-*.jsonl
    build_id: str | None
    neosft_version: str
    created: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self), option=orjson.OPT_INDENT_2) + b"\n"

    def write(self, folder: Location) -> None:
        (folder / MANIFEST).write_bytes(self.to_json())

    @classmethod
    def from_json(cls, data: bytes, where: str = MANIFEST) -> "Manifest":
        try:
            raw = orjson.loads(data)
            return cls(**{**raw, "source": SourceInfo(**raw["source"]),
                          "variants": {name: VariantData(**v) for name, v in raw["variants"].items()}})
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            raise UserError(f"{where} is not a manifest of this neosft version: rebuild the dataset with `neosft data build`") from None

    @classmethod
    def read(cls, folder: str | Location) -> "Manifest":
        """The manifest of the dataset in `folder`; a `UserError` when there is none or it is not one."""
        loc = (location(folder) if isinstance(folder, str) else folder) / MANIFEST
        if not loc.exists():
            raise UserError(f"no dataset at {folder} (no {MANIFEST}): build it with `neosft data build SOURCE --out {folder}`")
        return cls.from_json(loc.read_bytes(), str(loc))

    def variant(self, name: str, folder: str = "the dataset") -> VariantData:
        """The entry of variant `name`; a `UserError` naming what `folder` holds when it has none."""
        if name not in self.variants:
            raise UserError(f"{folder} has no {name!r} dataset (it has {', '.join(self.variants) or 'none'})")
        return self.variants[name]
