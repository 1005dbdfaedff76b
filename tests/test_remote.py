"""Sharing caches through remotes: a real S3 API (moto server on loopback), a directory and file:// URIs."""

import hashlib
import json
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli, write_synthetic_cache
from pipeline import remote as R
from pipeline.cache import read_teacher_cache
from pipeline.errors import QdllmError

KEY = "0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint():
    """A real S3 API on a free loopback port for the whole module."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch):
    env = {**S3_ENV, "AWS_ENDPOINT_URL": moto_endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _new_bucket(endpoint: str) -> str:
    from pyarrow import fs as pafs

    name = f"qdllm-{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                           endpoint_override=endpoint.split("://")[1], allow_bucket_creation=True)
    fs.create_dir(name)
    return name


@pytest.fixture(params=["s3", "dir", "file-uri"])
def remote_uri(request, tmp_path):
    """One fresh, empty remote of each kind."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        request.getfixturevalue("s3_env")
        return f"s3://{_new_bucket(endpoint)}/team/qdllm"
    if request.param == "dir":
        return str(tmp_path / "shared")
    return (tmp_path / "shared-uri").as_uri()


@pytest.fixture
def caches(tmp_path):
    """A source cache root holding one teacher cache, and an empty second cache root."""
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    write_synthetic_cache(a / "teacher" / KEY, n=80, num_classes=3, dim=12, key=KEY * 4)
    return a, b


def _tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256 (to prove something did not change)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _remote_files(r: R.Remote, kind: str, key: str) -> set[str]:
    return set(R._remote_sizes(r, kind, key))


def _put(r: R.Remote, path: str, data: bytes) -> None:
    with r.fs.open_output_stream(path) as f:
        f.write(data)


def _get(r: R.Remote, path: str) -> bytes:
    with r.fs.open_input_stream(path) as f:
        return f.read()


def test_push_then_pull_into_empty_cache(remote_uri, caches):
    a, b = caches
    assert R.push("teacher", KEY, remote_uri, cache_root=a) == "pushed"
    r = R.open_remote(remote_uri)
    assert R.remote_keys("teacher", r) == [KEY]
    assert _remote_files(r, "teacher", KEY) == {"train.parquet", "val.parquet", "test.parquet", "README.md", R.INDEX,
                                                "manifest.json"}
    assert R.push("teacher", KEY, remote_uri, cache_root=a) == "skipped"  # same manifest: nothing to send

    path = R.pull("teacher", KEY, remote_uri, cache_root=b)
    assert path == b / "teacher" / KEY
    got, ref = read_teacher_cache(path), read_teacher_cache(a / "teacher" / KEY)
    assert got.manifest == ref.manifest
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(got.splits[split].embeddings, ref.splits[split].embeddings)
        np.testing.assert_array_equal(got.splits[split].logits, ref.splits[split].logits)
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "manifest.json", "test.parquet", "train.parquet",
                                                      "val.parquet"]
    assert not [p for p in (b / "teacher").iterdir() if R.TMP_MARK in p.name]


def test_index_is_sha256sum_format_and_agrees_with_manifest(remote_uri, caches):
    a, _ = caches
    R.push("teacher", KEY, remote_uri, cache_root=a)
    r = R.open_remote(remote_uri)
    index = R.parse_index(_get(r, r.path("teacher", KEY, R.INDEX)), "index")
    manifest = json.loads((a / "teacher" / KEY / "manifest.json").read_text())
    card = hashlib.sha256((a / "teacher" / KEY / "README.md").read_bytes()).hexdigest()  # the dataset card
    assert index == {**{v["file"]: v["sha256"] for v in manifest["files"].values()}, "README.md": card}


@pytest.mark.parametrize("how", ["flipped byte", "truncated"])
def test_corrupt_remote_file_is_detected_and_nothing_published(remote_uri, caches, how):
    a, b = caches
    R.push("teacher", KEY, remote_uri, cache_root=a)
    r = R.open_remote(remote_uri)
    target = r.path("teacher", KEY, "val.parquet")
    data = bytearray(_get(r, target))
    if how == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    _put(r, target, bytes(data))
    write_synthetic_cache(b / "teacher" / "otherkey", n=20)  # a cache that must survive untouched
    before = _tree(b)
    with pytest.raises(QdllmError, match="val.parquet does not match its sha256") as e:
        R.pull("teacher", KEY, remote_uri, cache_root=b)
    assert len(str(e.value).split(". ")) == 1
    assert not (b / "teacher" / KEY).exists()
    after = _tree(b)
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == before


def test_interrupted_push_leaves_no_manifest(remote_uri, caches, monkeypatch):
    a, b = caches
    real, calls = R._upload_file, []

    def flaky(remote, local, dest, advance):
        calls.append(dest)
        if len(calls) == 2:  # the network dies in the middle of the push
            def boom():
                raise OSError("AWS Error NETWORK_CONNECTION during UploadPart operation: curlCode: 56")
            R._call(remote, "write", boom)
        return real(remote, local, dest, advance)

    monkeypatch.setattr(R, "_upload_file", flaky)
    with pytest.raises(QdllmError, match="Cannot reach remote"):
        R.push("teacher", KEY, remote_uri, cache_root=a)
    r = R.open_remote(remote_uri)
    files = _remote_files(r, "teacher", KEY)
    assert len(files) == 1 and "manifest.json" not in files and R.INDEX not in files
    assert R.remote_keys("teacher", r) == []
    with pytest.raises(QdllmError, match="has no teacher cache"):
        R.pull("teacher", KEY, remote_uri, cache_root=b)
    assert not (b / "teacher" / KEY).exists()

    monkeypatch.setattr(R, "_upload_file", real)  # the next push completes the job
    assert R.push("teacher", KEY, remote_uri, cache_root=a) == "pushed"
    read_teacher_cache(R.pull("teacher", KEY, remote_uri, cache_root=b))


def test_differing_remote_copy_needs_force(remote_uri, caches, tmp_path):
    a, b = caches
    R.push("teacher", KEY, remote_uri, cache_root=a)
    other = tmp_path / "machine-c"
    write_synthetic_cache(other / "teacher" / KEY, n=40, num_classes=3, dim=12, seed=7, key=KEY * 4)
    with pytest.raises(QdllmError, match="different teacher/"):
        R.push("teacher", KEY, remote_uri, cache_root=other)
    assert R.push("teacher", KEY, remote_uri, cache_root=other, force=True) == "pushed"
    got = read_teacher_cache(R.pull("teacher", KEY, remote_uri, cache_root=b))
    assert len(got.splits["train"]) == len(read_teacher_cache(other / "teacher" / KEY).splits["train"])


def _student_dir(root: Path, key: str) -> Path:
    """A student run as the student stage might write it: nested files, a manifest without file hashes."""
    from pipeline.publish import publish_dir

    final = root / "student" / key
    with publish_dir(final) as pub:
        (pub.path / "seeds" / "0").mkdir(parents=True)
        (pub.path / "seeds" / "0" / "weights.npz").write_bytes(np.arange(100, dtype=np.float32).tobytes())
        (pub.path / "metrics.json").write_text('{"accuracy": 0.8}')
        (pub.path / "circuit.qasm").write_text("OPENQASM 2.0;\n")
        pub.manifest = {"kind": "student-run", "inputs": {"teacher_key": KEY}}
    return final


def test_student_runs_get_an_index_and_are_verified(remote_uri, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    src = _student_dir(a, "feedfacecafebeef")
    R.push("student", "feedfacecafebeef", remote_uri, cache_root=a)
    r = R.open_remote(remote_uri)
    index = R.parse_index(_get(r, r.path("student", "feedfacecafebeef", R.INDEX)), "index")
    assert set(index) == {"seeds/0/weights.npz", "metrics.json", "circuit.qasm"}
    path = R.pull("student", "feedfacecafebeef", remote_uri, cache_root=b)
    assert _tree(path) == _tree(src)

    _put(r, r.path("student", "feedfacecafebeef", "seeds/0/weights.npz"), b"tampered")
    with pytest.raises(QdllmError, match="weights.npz does not match its sha256"):
        R.pull("student", "feedfacecafebeef", remote_uri, cache_root=tmp_path / "c")
    assert not (tmp_path / "c" / "student" / "feedfacecafebeef").exists()


def test_missing_key_and_missing_remote_are_one_sentence(tmp_path):
    with pytest.raises(QdllmError, match="does not exist"):
        R.pull("teacher", KEY, str(tmp_path / "nowhere"), cache_root=tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QdllmError, match=f"has no teacher cache {KEY}"):
        R.pull("teacher", KEY, str(tmp_path / "empty"), cache_root=tmp_path / "b")
    with pytest.raises(QdllmError, match="not a cache key"):
        R.pull("teacher", "../etc", str(tmp_path / "empty"), cache_root=tmp_path / "b")
    assert not (tmp_path / "b" / "teacher" / KEY).exists()


def test_pull_keeps_a_local_copy(remote_uri, caches):
    a, _ = caches
    before = _tree(a)
    assert R.pull("teacher", KEY, remote_uri, cache_root=a) == a / "teacher" / KEY  # present: no remote access
    assert _tree(a) == before


def test_hand_copied_teacher_cache_without_index_still_verifies(tmp_path, caches):
    """A teacher directory copied by hand (no files.sha256) is checked against its manifest's hashes."""
    import shutil

    a, b = caches
    copied = tmp_path / "mnt" / "teacher" / KEY
    shutil.copytree(a / "teacher" / KEY, copied)
    assert not (copied / R.INDEX).exists()  # no files.sha256: only the manifest's hashes to check against
    path = R.pull("teacher", KEY, str(tmp_path / "mnt"), cache_root=b)
    src = read_teacher_cache(a / "teacher" / KEY)
    got = read_teacher_cache(path)  # verifies every file against the manifest's sha256
    for split in ("train", "val", "test"):
        assert got.splits[split].ids == src.splits[split].ids
        np.testing.assert_array_equal(got.splits[split].logits, src.splits[split].logits)
    # the same hand copy with one byte changed is refused, and nothing is published
    shutil.rmtree(path)
    data = bytearray((copied / "val.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copied / "val.parquet").write_bytes(bytes(data))
    with pytest.raises(QdllmError, match="sha256"):
        R.pull("teacher", KEY, str(tmp_path / "mnt"), cache_root=b)
    assert not path.exists()


# ------------------------------------------------------------------ through the CLI


def _one_sentence_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert err.startswith("error:") and err.count(". ") == 0, err
    return err


def test_cli_push_pull_ls_over_s3(caches, s3_env, moto_endpoint, tmp_path):
    a, b = caches
    uri = f"s3://{_new_bucket(moto_endpoint)}/qd"
    proc = run_cli("cache", "push", "--remote", uri, env={**s3_env, "QDLLM_CACHE_DIR": str(a)})
    assert proc.returncode == 0, proc.stderr
    assert f"pushed teacher/{KEY}" in " ".join(proc.stderr.split())
    proc = run_cli("cache", "pull", "--remote", uri, env={**s3_env, "QDLLM_CACHE_DIR": str(b)})
    assert proc.returncode == 0, proc.stderr
    read_teacher_cache(b / "teacher" / KEY)
    proc = run_cli("cache", "ls", "--remote", uri, env={**s3_env, "QDLLM_CACHE_DIR": str(b), "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(KEY) == 2 and "48/16/16" in proc.stdout and "remote teacher caches" in proc.stdout
    proc = run_cli("cache", "verify", "--remote", uri, env={**s3_env, "QDLLM_CACHE_DIR": str(b)})
    assert proc.returncode == 0 and "match their sha256" in " ".join(proc.stderr.split())


def test_cli_unreachable_remote_fails_fast_with_one_sentence(caches):
    a, _ = caches
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "QDLLM_CACHE_DIR": str(a)}
    for cmd in ("push", "pull"):
        t = time.perf_counter()
        proc = run_cli("cache", cmd, "--remote", "s3://bucket/prefix", env=env)
        assert time.perf_counter() - t < 30
        assert "Cannot reach remote s3://bucket/prefix" in _one_sentence_error(proc)


def test_cli_bad_credentials_give_one_sentence(caches, s3_env, moto_endpoint, monkeypatch):
    import moto.settings

    a, b = caches
    uri = f"s3://{_new_bucket(moto_endpoint)}/qd"
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server now checks keys
    before = _tree(b)
    for cmd, root in (("push", a), ("pull", b)):
        proc = run_cli("cache", cmd, "--remote", uri, env={**s3_env, "QDLLM_CACHE_DIR": str(root)})
        assert "refused the credentials" in _one_sentence_error(proc)
    assert _tree(b) == before


def test_cli_missing_bucket_and_missing_key(caches, s3_env, moto_endpoint):
    a, b = caches
    proc = run_cli("cache", "pull", "--remote", "s3://no-such-bucket-here/x", env={**s3_env, "QDLLM_CACHE_DIR": str(b)})
    assert "does not exist" in _one_sentence_error(proc)
    uri = f"s3://{_new_bucket(moto_endpoint)}/qd"
    proc = run_cli("cache", "pull", "--remote", uri, "--key", KEY, env={**s3_env, "QDLLM_CACHE_DIR": str(b)})
    assert f"has no teacher cache {KEY}" in _one_sentence_error(proc)
    assert not (b / "teacher").exists() or not any((b / "teacher").glob(f"{KEY}*"))


# ------------------------------------------------------------------ the student stage on a pulled cache


def _student_ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]


TINY_STUDENT = ("--epochs", "1", "--seeds", "0", "--qubits", "2", "--layers", "1")


@pytest.mark.slow
def test_student_trains_from_a_pulled_cache_without_the_teacher_stage(caches, s3_env, moto_endpoint, tmp_path):
    """GPU machine pushes; another machine pulls into an empty cache and trains a student: no LLM, no teacher run."""
    a, b = caches
    uri = f"s3://{_new_bucket(moto_endpoint)}/qd"
    assert run_cli("cache", "push", "--remote", uri, env={**s3_env, "QDLLM_CACHE_DIR": str(a)}).returncode == 0
    env = {**s3_env, "QDLLM_CACHE_DIR": str(b), "QDLLM_DATA_DIR": str(tmp_path / "no-data")}
    assert run_cli("cache", "pull", "--remote", uri, env=env).returncode == 0
    proc = run_cli("student", "--teacher-key", KEY, *TINY_STUDENT, env=env)
    _student_ok(proc)
    assert [p.name for p in (b / "teacher").iterdir() if not p.name.startswith(".")] == [KEY]
    assert any(R.local_keys("student", b)), "no student run was published"
    assert not (tmp_path / "no-data").exists()  # the data and teacher stages did not run


@pytest.mark.slow
def test_student_pulls_a_missing_teacher_cache_from_remote(caches, tmp_path):
    """`make student REMOTE=DIR` = `qdllm student --teacher-key K --remote DIR` on an empty cache dir."""
    a, b = caches
    shared = tmp_path / "shared"
    R.push("teacher", KEY, str(shared), cache_root=a)
    env = {"QDLLM_CACHE_DIR": str(b), "QDLLM_DATA_DIR": str(tmp_path / "no-data")}
    proc = run_cli("student", "--teacher-key", KEY, "--remote", str(shared), *TINY_STUDENT, env=env)
    _student_ok(proc)
    read_teacher_cache(b / "teacher" / KEY)
    assert any(R.local_keys("student", b))


def test_other_object_stores_use_the_pyarrow_uri_path(tmp_path):
    r = R.open_remote("gs://some-bucket/team/qdllm")  # constructing it touches no network
    assert type(r.fs).__name__ == "GcsFileSystem" and r.root == "some-bucket/team/qdllm"
    assert R.open_remote((tmp_path / "x").as_uri()).root == str(tmp_path / "x")
    assert R.open_remote(str(tmp_path / "x")).is_local
    with pytest.raises(QdllmError, match="names no bucket"):
        R.open_remote("s3:///prefix")


def test_pull_no_adapter_leaves_the_adapter_on_the_remote_and_a_later_pull_adds_it(tmp_path, caches):
    import json

    from pipeline.keys import sha256_file

    a, b = caches
    src = a / "teacher" / KEY
    (src / "adapter").mkdir()
    (src / "adapter" / "adapter_config.json").write_text('{"r": 4}')
    manifest = json.loads((src / "manifest.json").read_text())
    contents = {**manifest["contents"], "adapter/adapter_config.json": sha256_file(src / "adapter" / "adapter_config.json")}
    (src / "manifest.json").write_text(json.dumps({**manifest, "adapter": "adapter", "contents": contents}))
    remote = str(tmp_path / "shared")
    R.push("teacher", KEY, remote, cache_root=a)
    path = R.pull("teacher", KEY, remote, cache_root=b, no_adapter=True)
    assert not (path / "adapter").exists() and read_teacher_cache(path).num_classes == 3
    assert json.loads((path / "manifest.json").read_text())["adapter"] == "adapter"  # still named
    assert R.pull("teacher", KEY, remote, cache_root=b, no_adapter=True) == path  # nothing more to do
    R.pull("teacher", KEY, remote, cache_root=b)
    assert (path / "adapter" / "adapter_config.json").read_text() == '{"r": 4}'
