"""Every MindSpore call the product makes, checked for values under the pinned NumPy, and the one known-broken
behaviour of MindSpore 2.10 under NumPy 2 (docs/student.md, "MindQuantum's MQLayer with MindSpore here").

The product's only MindSpore user is ``stages.student.model.AdamParameters`` (driven by ``train.py``); the
MindQuantum calls in ``circuit.py`` and ``noise.py`` call no MindSpore API but import it (``import mindquantum``
loads ``mindspore`` and ``mindquantum.framework``). Each call and its test:

=====================================================  ==============================================================
``os.environ`` ``MINDSPORE_ENV`` before the import      test_adam_parameters_as_train_uses_it (and test_student_train's
                                                        thread test)
``ms.Tensor(float32 ndarray)`` (weights, gradients)     test_tensor_from_float32_ndarray
``ms.Parameter(tensor, name="weights")``                test_parameter_holds_the_vector
``nn.Adam([param], learning_rate=lr)``                  test_adam_is_built_with_mindspore_defaults
``nn.Adam([param], learning_rate=[lr per step])``       test_adam_with_a_learning_rate_per_step
(train.learning_rates: warm-up, cosine/linear decay)
``optimizer((ms.Tensor(grad),))`` (one Adam step)       test_adam_step_is_the_hand_computed_update
``param.asnumpy()`` (then ``.astype(np.float64)``)      test_asnumpy_shares_the_parameters_memory,
                                                        test_adam_parameters_as_train_uses_it
``import mindquantum`` (circuit.py, noise.py)           test_product_calls_never_meet_the_numpy_check
=====================================================  ==============================================================

The known-broken behaviour: MindSpore's op-argument parser imports NumPy's 1.x C API the first time it asks "is
this a NumPy scalar?". Under NumPy 2 that import fails once; the op that asked raises ``SystemError`` (e.g.
``Tensor.view(-1, 1)``); later ops work but refuse NumPy scalars. It depends on what the process did before, so it
is observed in two fresh interpreters started together (``facts``). The tutorial path of
``tests/bench/student_speed.py`` (MQLayer, ``value_and_grad``), which is not the product, is checked here against
the product's own forward and backward.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.student.model import MINDSPORE_ENV, AdamParameters, QuantumStudent

ROOT = Path(__file__).resolve().parent.parent
NUMPY_MAJOR = int(np.__version__.split(".")[0])
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # nn.Adam's defaults, which AdamParameters keeps
F32 = lambda x: float(np.float32(x))  # noqa: E731  MindSpore holds β1, β2, ε, lr in float32 (1 − β2: 1.3e-5 off)

# ------------------------------------------------------------------------------------------- fresh interpreters

_PRELUDE = """
import json, os, sys
import numpy as np
out = {}
def attempt(key, f):
    try:
        r = f()
        out[key] = {"value": r.asnumpy().tolist() if hasattr(r, "asnumpy") else r}
    except Exception as e:
        out[key] = {"error": type(e).__name__, "message": str(e)[:300],
                    "cause": type(e.__cause__ or e.__context__).__name__ if (e.__cause__ or e.__context__) else None}
"""

# The product's MindSpore and MindQuantum use, in a fresh interpreter, then the known-broken call.
_PRODUCT_THEN_VIEW = _PRELUDE + """
from stages.student.circuit import build_circuit, observables, to_mindquantum
from stages.student.model import AdamParameters
from pipeline.noise import NoiseSpec
from stages.student.noise_sim import trajectory_probabilities
spec = build_circuit("paper", 3, 1)
to_mindquantum(spec); observables(3)
probs, _ = trajectory_probabilities(spec, NoiseSpec(depolarizing=(0.01, 0.02)), np.zeros((1, 3)),
                                    np.zeros(spec.n_params), trajectories=2, seed=0)
from pipeline.config import StudentConfig
from stages.student.train import learning_rates
for lr in (0.06, learning_rates(StudentConfig(schedule="cosine", warmup=0.5), 2)):  # one rate, one per step
    opt = AdamParameters(np.linspace(-1, 1, 7), lr)
    for g in (np.ones(7), np.arange(7.0)):
        w = opt.step(g)
out["product"] = {"weights": w.tolist(), "modules": sorted({"mindspore", "mindquantum.framework"} & set(sys.modules)),
                  "probs_sum": float(probs.sum())}
sys.stderr.write("=== product done ===\\n"); sys.stderr.flush()
import mindspore as ms
a = np.arange(4, dtype=np.int32)
attempt("view_first", lambda: ms.Tensor(a).view(-1, 1))
attempt("view_again", lambda: ms.Tensor(a).view(-1, 1))
t = ms.Tensor(np.array([1.0, 2.0], dtype=np.float32))
attempt("minus_python_float", lambda: t - 1.0)
attempt("minus_np_float64", lambda: t - np.float64(1.0))
attempt("minus_np_float32", lambda: t - np.float32(1.0))
attempt("sum_np_int64_axis", lambda: t.sum(np.int64(0)))
print(json.dumps(out))
"""

# Not view-specific: reshape fails the same way when it is the first; the benchmark's workaround takes the failure.
_RESHAPE_THEN_WORKAROUND = _PRELUDE + """
import mindspore as ms
a = np.arange(4, dtype=np.int32)
attempt("reshape_first", lambda: ms.Tensor(a).reshape(-1, 1))
sys.path.insert(0, "tests/bench")
import student_speed
out["workaround_took_failure"] = student_speed.take_mindspore_numpy_failure()
attempt("view_after_workaround", lambda: ms.Tensor(a).view(-1, 1))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def facts():
    """Both scripts in fresh interpreters at once (MindSpore's import dominates: about 3 s)."""
    env = {**os.environ, "GLOG_v": "2"}  # warnings on, so that "Numpy init failed" shows where it happens
    procs = {name: subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, code in (("product", _PRODUCT_THEN_VIEW), ("reshape", _RESHAPE_THEN_WORKAROUND))}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, f"{name}: exit {p.returncode}\n{stderr[-3000:]}"
        out[name] = json.loads(stdout.strip().splitlines()[-1])
        out[name]["stderr"] = stderr
    return out


def test_known_broken_first_numpy_scalar_check_raises_systemerror_under_numpy2(facts):
    """Records the issue: MindSpore 2.10's extension is built for NumPy's 1.x C API. Under NumPy 2 the first op whose
    argument parser checks for a NumPy scalar (here ``Tensor.view(-1, 1)``) fails its NumPy import, logs "Numpy init
    failed" and raises SystemError; the same call then works. When this test fails, MindSpore or NumPy changed: look
    again at take_mindspore_numpy_failure in tests/bench/student_speed.py and the section in docs/student.md."""
    f = facts["product"]
    if NUMPY_MAJOR >= 2:
        assert f["view_first"]["error"] == "SystemError", f["view_first"]
        assert "returned a result with an exception set" in f["view_first"]["message"]
        assert f["view_first"]["cause"] == "ImportError"  # numpy.core.multiarray failed to import (1.x C API)
        assert "Numpy init failed" in f["stderr"]
    else:
        assert f["view_first"] == {"value": [[0], [1], [2], [3]]}
    assert f["view_again"] == {"value": [[0], [1], [2], [3]]}  # one failure per process, then the call works


def test_known_broken_is_not_view_specific_and_the_benchmark_takes_it(facts):
    """``reshape`` is no replacement for ``view``: whichever such op comes first fails. The benchmark meets the failure
    on a throwaway op (take_mindspore_numpy_failure); afterwards ``view`` works."""
    f = facts["reshape"]
    if NUMPY_MAJOR >= 2:
        assert f["reshape_first"]["error"] == "SystemError", f["reshape_first"]
        assert f["workaround_took_failure"] is False  # reshape already took it
    else:
        assert f["reshape_first"] == {"value": [[0], [1], [2], [3]]}
    assert f["view_after_workaround"] == {"value": [[0], [1], [2], [3]]}


def test_after_the_failure_numpy_scalars_are_refused_as_op_arguments(facts):
    """For the rest of the process MindSpore takes NumPy scalars for unknown objects: np.float32 / np.int64 arguments
    raise TypeError; Python numbers (and np.float64, a float subclass) work."""
    f = facts["product"]
    assert f["minus_python_float"] == {"value": [0.0, 1.0]}
    assert f["minus_np_float64"] == {"value": [0.0, 1.0]}
    if NUMPY_MAJOR >= 2:
        assert f["minus_np_float32"]["error"] == "TypeError", f["minus_np_float32"]
        assert f["sum_np_int64_axis"]["error"] == "TypeError", f["sum_np_int64_axis"]
    else:
        assert f["minus_np_float32"] == {"value": [0.0, 1.0]}
        assert f["sum_np_int64_axis"] == {"value": 3.0}


def test_product_calls_never_meet_the_numpy_check(facts):
    """Importing MindQuantum, MindQuantum's simulator, and AdamParameters' Tensor/Parameter/nn.Adam/asnumpy calls
    (with one learning rate and with one per step) never reach MindSpore's NumPy-scalar check: no "Numpy init
    failed" before the product is done, and the check is still unused afterwards (the view above is the one that
    meets it). The product stays clear of the breakage by doing its arithmetic in NumPy and handing MindSpore only
    float32 arrays."""
    f = facts["product"]
    before = f["stderr"].split("=== product done ===")[0]
    assert "Numpy init failed" not in before
    assert f["product"]["modules"] == ["mindquantum.framework", "mindspore"]  # loaded by `import mindquantum`
    assert f["product"]["probs_sum"] == pytest.approx(1.0)
    assert np.all(np.isfinite(f["product"]["weights"]))


# ------------------------------------------------------------------------------------------- the product's calls


@pytest.fixture(scope="module")
def ms():
    for k, v in MINDSPORE_ENV.items():  # as AdamParameters does, before MindSpore's runtime starts
        os.environ.setdefault(k, v)
    import mindspore

    return mindspore


def _adam_update(w, m, v, g, t: int, lr: float):
    """One Adam step by hand in float64, as MindSpore writes it: bias corrections folded into the step size and ε
    added to √v (PyTorch adds it to the bias-corrected √v̂), with MindSpore's float32 constants. Returns the new
    (w, m, v)."""
    b1, b2, eps, lr = F32(BETA1), F32(BETA2), F32(EPS), F32(lr)
    w, m, v = (np.asarray(a, dtype=np.float64) for a in (w, m, v))
    g = np.asarray(g, dtype=np.float32).astype(np.float64)  # the step sees float32 gradients
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps), m, v


def _adam_reference(w0: np.ndarray, grads: list[np.ndarray], lr: float) -> list[np.ndarray]:
    """The weights after each of ``grads``, Adam by hand in float64 from ``w0`` and zero moments."""
    w, m, v, out = w0, np.zeros(w0.shape), np.zeros(w0.shape), []
    for t, g in enumerate(grads, start=1):
        w, m, v = _adam_update(w, m, v, g, t, lr)
        out.append(w)
    return out


def _edge_floats() -> np.ndarray:
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1e-45, -1e-40, 1.17549435e-38, 3.4028235e38, -3.4028235e38, np.inf, -np.inf,
                        np.nan, 1.0 + 2**-23, np.pi], dtype=np.float32)
    return np.concatenate([special, rng.normal(0, 3, 4323 - special.size).astype(np.float32)])


@pytest.mark.parametrize("size", [1, 5, 4323])  # 4323: the quantum student's vector at D=384, n=11, L=2, C=2
def test_tensor_from_float32_ndarray(ms, size):
    """``ms.Tensor(np.asarray(x, dtype=np.float32))``: float32, same shape, every bit kept (−0, subnormals, ±inf,
    NaN), and a copy: writing the source afterwards leaves the Tensor as it was."""
    src = _edge_floats()[:size].copy()
    from_float64 = np.asarray(src.astype(np.float64), dtype=np.float32)  # what the product hands over
    for arr in (src, from_float64):
        t = ms.Tensor(arr)
        assert t.dtype == ms.float32 and t.shape == (size,)
        back = t.asnumpy()
        assert back.dtype == np.float32 and back.shape == (size,)
        assert np.array_equal(back.view(np.uint32), arr.view(np.uint32))
    t = ms.Tensor(src)
    src[0] = 123.0
    assert t.asnumpy()[0] != 123.0


def test_parameter_holds_the_vector(ms):
    """``ms.Parameter(ms.Tensor(vec), name="weights")``: name, dtype, shape, trainable, values."""
    vec = np.linspace(-2, 2, 11).astype(np.float32)
    p = ms.Parameter(ms.Tensor(vec), name="weights")
    assert p.name == "weights" and p.dtype == ms.float32 and p.shape == (11,) and p.requires_grad
    assert np.array_equal(p.asnumpy(), vec)


def test_adam_is_built_with_mindspore_defaults(ms):
    """``nn.Adam([param], learning_rate=lr)``: one parameter, lr stored in float32, β1 0.9, β2 0.999, ε 1e-8, no
    weight decay, moments start at zero. (Values are read with ``asnumpy``: ``tensor == 0.9`` would itself be a
    first NumPy-scalar check, see the known-broken tests.)"""
    from mindspore import nn

    p = ms.Parameter(ms.Tensor(np.ones(3, dtype=np.float32)), name="weights")
    opt = nn.Adam([p], learning_rate=0.06)
    assert [q.name for q in opt.parameters] == ["weights"] and opt.parameters[0] is p
    value = lambda x: float(x.asnumpy()) if hasattr(x, "asnumpy") else float(x)  # noqa: E731
    assert value(opt.learning_rate) == pytest.approx(0.06, rel=1e-7)
    assert value(opt.beta1) == pytest.approx(BETA1, rel=1e-7) and value(opt.beta2) == pytest.approx(BETA2, rel=1e-7)
    assert value(opt.eps) == pytest.approx(EPS, rel=1e-7)
    assert value(opt.weight_decay) == 0.0
    assert not opt.moment1[0].asnumpy().any() and not opt.moment2[0].asnumpy().any()


def test_adam_step_is_the_hand_computed_update(ms):
    """``optimizer((ms.Tensor(grad),))``, five steps: each step's weights and both moments equal one Adam step by
    hand from the state before it (to float32 rounding), including a zero gradient (no move), a tiny one (where ε's
    place matters: MindSpore's formula, not PyTorch's) and sign changes; the five together match Adam from the start."""
    from mindspore import nn

    w0 = np.array([0.5, -1.0, 2.0, 0.0, 3.0, -0.25], dtype=np.float32)
    grads = [np.array([1.0, -2.0, 0.0, 1e-7, 3e-9, 0.5]), np.array([-1.0, -2.0, 0.0, 1e-7, 1.0, 0.25]),
             np.array([0.3, 4.0, 0.0, -1e-7, -1.0, 0.0]), np.array([1.0, 1.0, 0.0, 1e-7, 2.0, -8.0]),
             np.array([-0.7, 0.1, 0.0, 1e-7, 0.0, 1e3])]
    lr = 0.06
    p = ms.Parameter(ms.Tensor(w0), name="weights")
    opt = nn.Adam([p], learning_rate=lr)
    m1, m2 = opt.moment1[0], opt.moment2[0]
    for t, g in enumerate(grads, start=1):
        w, m, v = _adam_update(p.asnumpy(), m1.asnumpy(), m2.asnumpy(), g, t, lr)
        assert opt((ms.Tensor(g.astype(np.float32)),)) == (True,)
        np.testing.assert_allclose(m1.asnumpy(), m, rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(m2.asnumpy(), v, rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(p.asnumpy(), w, rtol=0, atol=2 * np.spacing(np.float32(4.0)))  # 2 ulp of |w| ≤ 4
    np.testing.assert_allclose(p.asnumpy(), _adam_reference(w0, grads, lr)[-1], rtol=0, atol=2e-6)
    assert p.asnumpy()[2] == w0[2]  # zero gradient throughout: not moved at all
    # the 1e-7 gradient: MindSpore's ε placement moves it by 0.24·lr on the first step; PyTorch's would by 0.91·lr
    first = _adam_reference(w0, grads[:1], lr)[0][3]
    assert abs(first) == pytest.approx(0.240252 * lr, rel=1e-5)


def test_asnumpy_shares_the_parameters_memory(ms):
    """``param.asnumpy()`` is a view of the Parameter's memory: the next Adam step rewrites an array it returned.
    AdamParameters.value() copies it (``.astype(np.float64)``), so the weights train.py keeps (best_flat, the
    returned ``flat``) never change under it. If MindSpore starts returning copies this test fails, harmlessly."""
    from mindspore import nn

    p = ms.Parameter(ms.Tensor(np.zeros(4, dtype=np.float32)), name="weights")
    opt = nn.Adam([p], learning_rate=0.1)
    raw = p.asnumpy()
    copied = p.asnumpy().astype(np.float64)
    opt((ms.Tensor(np.ones(4, dtype=np.float32)),))
    assert np.allclose(raw, -0.1, rtol=1e-5)  # rewritten in place by the step
    assert np.array_equal(copied, np.zeros(4))


def test_adam_parameters_as_train_uses_it(ms):
    """AdamParameters as train_seed calls it (``value()`` after construction, then ``step(grad)`` per batch): the
    float64 weights come back rounded to float32, each step equals hand-computed Adam at the config's lr, every
    returned vector is a float64 snapshot, and the caller's vector is never written."""
    from pipeline.config import StudentConfig

    lr = StudentConfig().lr
    rng = np.random.default_rng(1)
    flat = rng.normal(0, 1, 50)
    kept = flat.copy()
    opt = AdamParameters(flat, lr)
    for k, v in MINDSPORE_ENV.items():
        assert os.environ.get(k) is not None, k
    w = opt.value()
    assert w.dtype == np.float64 and np.array_equal(w, flat.astype(np.float32).astype(np.float64))
    grads = [rng.normal(0, s, 50) for s in (1.0, 0.01, 10.0)]
    snapshots = []
    for g, want in zip(grads, _adam_reference(flat.astype(np.float32), grads, lr)):
        w = opt.step(g)
        assert w.dtype == np.float64
        np.testing.assert_allclose(w, want, rtol=0, atol=2e-6)  # float32 weights of |w| < 5, three steps
        snapshots.append((w, w.copy()))
    assert all(np.array_equal(a, b) for a, b in snapshots)  # later steps did not rewrite earlier results
    assert np.array_equal(flat, kept)


def test_adam_with_a_learning_rate_per_step(ms):
    """``nn.Adam([param], learning_rate=list)`` as train_seed builds it (``learning_rates(cfg, steps)``: a warm-up,
    then a cosine decay; Python floats and np.float64): step t uses the t-th rate, to float32 rounding, equal to
    Adam by hand. MindSpore indexes the list by its own step counter: one step more than the list holds raises
    RuntimeError (Gather index out of range), so train_seed gives one rate per batch of every epoch."""
    from pipeline.config import StudentConfig
    from stages.student.train import learning_rates

    cfg = StudentConfig(schedule="cosine", warmup=0.25, lr=0.06)
    lrs = learning_rates(cfg, 8)
    assert len(lrs) == 8 and lrs[0] < lrs[1] == pytest.approx(0.06) and lrs[-1] < 0.01
    rng = np.random.default_rng(3)
    flat = rng.normal(0, 1, 20)
    opt = AdamParameters(flat, lrs)
    w = opt.value()
    m1, m2 = opt.optimizer.moment1[0], opt.optimizer.moment2[0]
    for t, lr in enumerate(lrs, start=1):
        g = rng.normal(0, 1, 20)
        want, _, _ = _adam_update(w, m1.asnumpy(), m2.asnumpy(), g, t, float(lr))
        w = opt.step(g)
        np.testing.assert_allclose(w, want, rtol=0, atol=2 * np.spacing(np.float32(4.0)), err_msg=f"step {t}")
    with pytest.raises(RuntimeError, match="Gather"):
        opt.step(np.ones(20))


# ------------------------------------------------------------------- the benchmark's MindQuantum tutorial path


def _student_speed():
    spec = importlib.util.spec_from_file_location("student_speed", ROOT / "tests" / "bench" / "student_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tutorial_path_matches_the_trainer(ms):
    """(a) of tests/bench/student_speed.py (Dense → MQLayer → Dense, the loss in MindSpore ops, ``value_and_grad``)
    computes the same logits, loss and gradients as the product's NumPy forward/backward for the same weights
    (set with ``Parameter.set_data``), so the benchmark compares two ways of doing the same training step."""
    from stages.student.losses import distill_loss

    bench = _student_speed()
    n, layers, dim, classes, batch = 3, 2, 5, 3, 6
    net, opt, step = bench.tutorial_training(n_qubits=n, layers=layers, dim=dim, classes=classes)
    model = QuantumStudent(dim, classes, "paper", n, layers)
    rng = np.random.default_rng(2)
    flat = model.init(rng)
    flat[model.slices["theta"]] = rng.uniform(-np.pi, np.pi, model.spec.n_params)  # far from identity
    flat = flat.astype(np.float32).astype(np.float64)
    p = model.unpack(flat)
    names = net.q.evolution.expectation_with_grad.ansatz_params_name
    for param, value in ((net.enc.weight, p["enc_w"].T), (net.enc.bias, p["enc_b"]),
                         (net.q.weight, p["theta"][[int(s.removeprefix("theta")) for s in names]]),
                         (net.head.weight, p["head_w"].T), (net.head.bias, p["head_b"])):
        param.set_data(ms.Tensor(np.ascontiguousarray(value, dtype=np.float32)))
    x = rng.normal(0, 1, (batch, dim))
    y = rng.integers(0, classes, batch)
    t = rng.normal(0, 2, (batch, classes))

    logits, cache = model.forward(flat, x)
    want_loss, g = distill_loss(logits, y, t, "kl+js+ce", 0.9, 1.0)
    want = model.unpack(model.backward(cache, g))
    tx, ty, tt = bench.tutorial_batch(x, y, t)
    assert ty.shape == (batch, 1)
    np.testing.assert_allclose(net(tx).asnumpy(), logits, atol=2e-5)
    loss, grads = step(tx, ty, tt)
    assert float(loss.asnumpy()) == pytest.approx(want_loss, abs=2e-5)
    got = {q.name: gq.asnumpy() for q, gq in zip(opt.parameters, grads)}
    theta_grad = np.empty(model.spec.n_params)
    theta_grad[[int(s.removeprefix("theta")) for s in names]] = got["q.weight"]
    for name, value in (("enc.weight", want["enc_w"].T), ("enc.bias", want["enc_b"]), ("head.weight", want["head_w"].T),
                        ("head.bias", want["head_b"])):
        np.testing.assert_allclose(got[name], value, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(theta_grad, want["theta"], atol=2e-5)
