"""The runner, the verdict and exit codes, the CLI, and whole-model audits of the test zoo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxviz.audit import INTERNAL, AuditResult, Finding, all_checks, audit, exit_code, select_checks
from onnxviz.audit import weights as weight_checks
from onnxviz.cli import audit as audit_cli
from onnxviz.cli.main import COMMANDS, main
from onnxviz.errors import InputError
from onnxviz.model import load
from tests import models
from tests.audit.helpers import audit_proto, model_of


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Until the lead registers the subcommand in cli/main.py.
    monkeypatch.setitem(COMMANDS, "audit", audit_cli)


def _result(*severities: str) -> AuditResult:
    found = tuple(Finding(f"x.{i}", s, "m") for i, s in enumerate(severities))  # type: ignore[arg-type]
    return AuditResult("m", found, (), (), {})


def test_verdict_ordering_and_exit_codes() -> None:
    r = _result("info", "warning", "error", "warning")
    assert [f.severity for f in r.findings] == ["error", "warning", "warning", "info"]
    assert r.verdict == "fail" and exit_code(r) == 1 and exit_code(r, "never") == 0
    w = _result("info", "warning")
    assert w.verdict == "warn" and exit_code(w, "error") == 0 and exit_code(w, "warning") == 1
    p = _result("info")
    assert p.verdict == "pass" and exit_code(p, "warning") == 0
    with pytest.raises(ValueError):
        exit_code(p, "sometimes")  # type: ignore[arg-type]


def test_check_ids_are_unique_documented_and_selectable() -> None:
    ids = [c.id for c in all_checks()]
    assert len(ids) == len(set(ids))
    assert all(c.__doc__ and c.__doc__.strip() for c in all_checks())
    assert {c.id for c in select_checks(["weights"])} == {i for i in ids if i.startswith("weights.")}
    with pytest.raises(InputError):
        select_checks(["weights.nope"])


def test_crashing_check_becomes_internal_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self, ctx):  # noqa: ANN001, ANN202
        raise RuntimeError("kaboom")

    monkeypatch.setattr(weight_checks.DeadFiltersCheck, "run", boom)
    result = audit(model_of(models.tiny_cnn()), checks=["weights"])
    (f,) = result.by_check(INTERNAL)
    assert f.severity == "error" and "weights.dead-filters" in f.message and "kaboom" in f.message
    assert "weights.near-zero" in result.checks_run and result.verdict == "fail"
    assert set(result.timings) >= {"weights.dead-filters", "weights.near-zero"}


def test_several_planted_defects_are_all_found() -> None:
    proto = models.with_dead_and_duplicate_filters()
    g = proto.graph
    g.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "leftover"))
    g.initializer.append(numpy_helper.from_array(np.array(True), "train"))
    g.initializer.append(numpy_helper.from_array(np.array(0.3, np.float32), "ratio"))
    g.node.append(helper.make_node("Relu", ["conv2"], ["dangling_out"], name="dangling"))
    index, relu2 = next((i, n) for i, n in enumerate(g.node) if n.name == "relu2")
    relu2.output[0] = "relu2_raw"
    g.node.insert(index + 1, helper.make_node("Dropout", ["relu2_raw", "ratio", "train"], ["relu2"], name="dropout"))
    g.node[index + 2].name = ""
    g.output[0].type.tensor_type.shape.dim[0].Clear()
    g.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    w = numpy_helper.to_array(g.initializer[0]).copy()
    w[0, 0, 0, 0] = np.nan
    g.initializer[0].CopyFrom(numpy_helper.from_array(w, g.initializer[0].name))
    result = audit_proto(proto)
    found = {f.check for f in result.findings}
    expected = {
        "weights.nonfinite",
        "weights.dead-filters",
        "weights.duplicate-filters",
        "graph.unused-initializers",
        "graph.dead-nodes",
        "graph.training-ops",
        "graph.node-names",
        "graph.invalid-dims",
        "activations.nonfinite",
    }
    assert expected <= found, expected - found
    assert result.verdict == "fail"
    (nan,) = result.by_check("activations.nonfinite")
    assert nan.node == models.AUDIT_CONV_NODE


@pytest.mark.parametrize("builder", [models.tiny_cnn, models.grayscale_cnn])
def test_clean_models_have_no_errors(builder) -> None:  # noqa: ANN001
    result = audit_proto(builder())
    assert [f for f in result.findings if f.severity == "error"] == []
    assert not result.skipped


@pytest.mark.parametrize(
    "builder",
    [models.paddle_style_constants, models.quantized_qdq, models.quantized_qlinear, models.hostile_names, models.tf2onnx_nhwc,
     models.constant_subgraph_weights, models.two_input_model, models.non_image_mlp, models.dynamic_spatial],
)
def test_zoo_models_audit_without_crashing(builder) -> None:  # noqa: ANN001
    result = audit_proto(builder(), probe_size=32)
    assert result.verdict in ("pass", "warn"), [f for f in result.findings if f.severity == "error"]
    json.dumps(result.to_json(), allow_nan=False)


def test_torch_exports_have_no_errors(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests import torch_models

    for name in sorted(torch_models.ARCHITECTURES):
        path = torch_models.export(torch_models.build(name), tmp_path / f"{name}.onnx", opset=17)
        result = audit(load(path), probe_samples=2, probe_size=32)
        errors = [f for f in result.findings if f.severity == "error"]
        assert errors == [], (name, errors)
        assert not result.by_check(INTERNAL)


_BIG = {"light_vgg19.onnx", "light_densenet121.onnx", "light_inception_v2.onnx", "light_resnet50.onnx", "light_zfnet512.onnx", "light_bvlc_alexnet.onnx"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow, id=p.name) if p.name in _BIG else pytest.param(p, id=p.name) for p in models.light_model_paths()],
)
def test_light_models_audit_without_crashing(path: Path) -> None:
    result = audit(load(path), probe_samples=1)
    assert not result.by_check(INTERNAL), result.by_check(INTERNAL)
    assert "activations.ranges" in result.checks_run and "runtime.numpy-engine" in result.checks_run + tuple(s.check for s in result.skipped)
    json.dumps(result.to_json(), allow_nan=False)


# ----------------------------------------------------------------------------------------- CLI
def _save(tmp_path: Path, proto: onnx.ModelProto, name: str = "m.onnx") -> str:
    path = tmp_path / name
    onnx.save(proto, path)
    return str(path)


def test_cli_exit_codes_by_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warn = _save(tmp_path, models.with_dead_and_duplicate_filters())
    assert main(["audit", warn, "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict: WARN") and "[weights.dead-filters]" in out and "hint:" in out
    assert main(["audit", warn, "-q", "--fail-on", "warning"]) == 1
    assert main(["audit", warn, "-q", "--fail-on", "never"]) == 0
    proto = models.tiny_cnn()
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    w[0, 0, 0, 0] = np.inf
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, proto.graph.initializer[0].name))
    bad = _save(tmp_path, proto, "bad.onnx")
    capsys.readouterr()
    assert main(["audit", bad, "-q", "--checks", "weights"]) == 1
    assert capsys.readouterr().out.startswith("verdict: FAIL")
    assert main(["audit", bad, "-q", "--checks", "weights", "--fail-on", "never"]) == 0


def test_cli_json_inputs_and_unknown_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(tmp_path, models.with_dead_and_duplicate_filters())
    x = np.random.default_rng(0).uniform(-2, 2, (2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out_json = tmp_path / "audit.json"
    code = main(["audit", path, "-q", "--input", str(tmp_path / "x.npy"), "--json", str(out_json), "--checks", "activations,weights.dead-filters"])
    assert code == 0
    data = json.loads(out_json.read_text())
    assert data["verdict"] == "warn" and data["exit_code"] == 0 and data["inputs"].startswith("given inputs (2 samples)")
    assert {f["check"] for f in data["findings"]} >= {"activations.dead-channels", "weights.dead-filters"}
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()
    assert main(["audit", path, "--checks", "weights.bogus"]) == 1
    err = capsys.readouterr().err
    assert "error: unknown audit check" in err and "hint:" in err and "Traceback" not in err


def test_cli_escapes_control_characters_in_model_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(tmp_path, models.hostile_names())
    assert main(["audit", path, "-q", "--checks", "activations.ranges,graph"]) == 0
    out = capsys.readouterr().out
    assert "line one\nline two" not in out and "\\n" in out


# ---------------------------------------------------------------------------- batching
def test_a_fixed_batch_model_runs_one_sample_a_pass_and_frees_its_batch_for_gradients_only() -> None:
    from onnxviz.audit import AuditContext, AuditSettings
    from onnxviz.model import Model

    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    model = Model.from_proto(models.fixed_flatten_cnn())
    ctx = AuditContext(model, x, AuditSettings())
    assert [b["input"].shape[0] for b in ctx.batches] == [1] * 8
    assert "shared:runnable" not in ctx.timings  # the forward checks never verify a freed copy
    assert ctx.runnable is model.batch_free is not None

    # the rewrite cannot free this one: one sample per pass, as the model declares
    sliced = Model.from_proto(models.fixed_flatten_cnn(slice_batch=True))
    ctx = AuditContext(sliced, x, AuditSettings())
    assert ctx.runnable is sliced
    assert [b["input"].shape[0] for b in ctx.batches] == [1] * 8

    checks = ["activations", "runtime"]
    whole = audit(Model.from_proto(models.fixed_flatten_cnn()), x, checks=checks)
    single = audit(Model.from_proto(models.fixed_flatten_cnn()), x, checks=checks, batch_size=1)
    assert [(f.check, f.message) for f in whole.findings] == [(f.check, f.message) for f in single.findings]
    ranges = [f for f in whole.findings if f.check == "activations.ranges"]
    assert ranges and ranges[0].evidence == next(f for f in single.findings if f.check == "activations.ranges").evidence


def test_split_batches_respects_fixed_batches_and_unbatched_inputs() -> None:
    from onnxviz.audit.runner import split_batches
    from onnxviz.model import Model

    free = Model.from_proto(models.tiny_cnn())
    x = np.zeros((8, 3, 32, 32), np.float32)
    assert [b["input"].shape[0] for b in split_batches(free, {"input": x}, 3)] == [3, 3, 2]
    assert [b["input"].shape[0] for b in split_batches(free, {"input": x}, None)] == [8]
    fixed8 = Model.from_proto(models.tiny_cnn(batch=8))
    assert [b["input"].shape[0] for b in split_batches(fixed8, {"input": x}, 3)] == [8]
    fixed2 = Model.from_proto(models.tiny_cnn(batch=2))
    assert [b["input"].shape[0] for b in split_batches(fixed2, {"input": x}, 3)] == [2, 2, 2, 2]


def test_a_batch_whose_tensors_exceed_the_budget_is_scanned_in_pieces_with_the_same_findings() -> None:
    from onnxviz.model import Model

    x = np.random.default_rng(1).standard_normal((6, 3, 32, 32)).astype(np.float32)
    checks = ["activations", "runtime"]
    whole = audit(Model.from_proto(models.tiny_cnn()), x, checks=checks)
    # tiny_cnn taps ~107 kB a sample: with 100 kB a pass, one sample per pass, in two chunks
    cut = audit(Model.from_proto(models.tiny_cnn()), x, checks=checks, budget_bytes=100_000)
    assert [(f.check, f.message, f.evidence) for f in whole.findings] == [(f.check, f.message, f.evidence) for f in cut.findings]
    assert any(f.check == "activations.ranges" for f in whole.findings)
