"""Load and validate an ONNX model once; everything else reads from the resulting :class:`Model`."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, shape_inference

from .errors import InputError, ModelLoadError, UnsupportedOpError
from .graph import Graph, TensorInfo, tensor_info_from_value
from .targets import Target, output_seed

__all__ = ["Model", "load"]

log = logging.getLogger(__name__)

_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)


def load(path: str | os.PathLike[str], *, check: bool = True) -> Model:
    """Load, validate and wrap an ONNX model file.

    External data beside the model is loaded; a location that points outside the model's folder
    is refused (a model file must not read arbitrary files).
    """
    return Model.load(path, check=check)


class Model:
    """A validated ONNX model and the read-only analyses built on it."""

    def __init__(self, proto: onnx.ModelProto, *, path: Path | None = None) -> None:
        self.proto = proto
        self.path = path
        self.graph = Graph(proto)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check: bool = True) -> Model:
        p = Path(path)
        if not p.exists():
            raise ModelLoadError(f"model file {str(p)!r} does not exist", hint="check the path")
        if not p.is_file():
            raise ModelLoadError(f"{str(p)!r} is not a file", hint="give the path of an .onnx file")
        data = p.read_bytes()
        if not data:
            raise ModelLoadError(f"{str(p)!r} is empty", hint="the file was not written completely")
        proto = _parse(data, str(p))
        if _has_external(proto):
            _load_external(proto, p)
        model = cls(proto, path=p.resolve())
        if check:
            model._check()
        return model

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, *, check: bool = True) -> Model:
        """Wrap an in-memory model (tests, exporters); external data must already be loaded."""
        model = cls(proto)
        if check:
            model._check()
        return model

    def _check(self) -> None:
        name = str(self.path) if self.path else "<in-memory model>"
        if len(self.proto.graph.node) == 0:
            raise ModelLoadError(f"{name!r} has an empty graph", hint="is this really a model file?")
        try:
            onnx.checker.check_model(self.proto)
        except (onnx.checker.ValidationError, Exception) as e:  # checker raises several types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"{name!r} is not a valid ONNX model: {first}",
                hint="re-export the model, or check it with onnx.checker for details",
            ) from e
        if not self.graph.inputs:
            raise ModelLoadError(f"{name!r} has no graph inputs", hint="a model needs at least one input")

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path.name
        return self.proto.graph.name or "model"

    @property
    def opset(self) -> int:
        return self.graph.opset

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.graph.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.graph.outputs

    @property
    def metadata(self) -> dict[str, str]:
        return {p.key: p.value for p in self.proto.metadata_props}

    @property
    def constants(self) -> Mapping[str, np.ndarray]:
        """Initializers and folded constant subgraphs, by tensor name."""
        return self.graph.constants

    def input(self, name: str | None = None) -> TensorInfo:
        if name is None:
            return self.inputs[0]
        for t in self.inputs:
            if t.name == name:
                return t
        raise InputError(
            f"model has no input {name!r}; its inputs are {[t.name for t in self.inputs]}",
            hint="use one of the listed input names",
        )

    # ------------------------------------------------------------------ shapes
    def infer_shapes(self, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, TensorInfo]:
        """Shapes of every tensor by ONNX shape inference, with symbolic input dims resolved.

        ``input_shapes`` replaces the declared shapes of the named inputs (e.g. a concrete batch and
        image size for a model with dynamic dims). Tensors whose shape cannot be inferred are absent.
        """
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        if input_shapes:
            for value in proto.graph.input:
                if value.name in input_shapes:
                    shape = input_shapes[value.name]
                    dims = value.type.tensor_type.shape.dim
                    if len(dims) != len(shape):
                        raise InputError(
                            f"input {value.name!r} has rank {len(dims)}, got shape {list(shape)}",
                            hint="give one size per dimension, e.g. 1x3x224x224",
                        )
                    for d, n in zip(dims, shape):
                        d.Clear()
                        d.dim_value = int(n)
        # Large float weights are irrelevant to shapes: drop their bytes so inference stays cheap.
        # Integer tensors (shapes, axes) are kept, inference reads their values.
        for t in proto.graph.initializer:
            if t.data_type in _FLOAT_TYPES and t.HasField("raw_data") and len(t.raw_data) > 4096:
                t.ClearField("raw_data")
        try:
            inferred = shape_inference.infer_shapes(proto, data_prop=True)
        except Exception:  # shape inference is best effort; unknown shapes stay unknown
            inferred = proto
        infos: dict[str, TensorInfo] = {}
        for v in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            info = tensor_info_from_value(v)
            if v.name not in infos or infos[v.name].shape is None:
                infos[v.name] = info
        for name, t in self.graph.initializers.items():
            infos[name] = TensorInfo(name, tuple(int(d) for d in t.dims), _dtype_of(t))
        return infos

    # ------------------------------------------------------------------ running
    @cached_property
    def ort(self) -> Any:
        """The onnxruntime backend for this model (sessions are created on first use)."""
        from .backends.onnxruntime import OrtBackend

        return OrtBackend(self.proto, self.graph)

    def feeds(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate model inputs: one array for a single-input model, or a dict by input name.

        Checks names, ranks, static dimensions and finiteness, and casts to the declared dtype
        (the caller's arrays are never modified).
        """
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise InputError(
                    f"the model has {len(self.inputs)} inputs {[t.name for t in self.inputs]}; got one array",
                    hint="pass a dict {input name: array}",
                )
            inputs = {self.inputs[0].name: inputs}
        out: dict[str, np.ndarray] = {}
        for info in self.inputs:
            if info.name not in inputs:
                raise InputError(
                    f"missing model input {info.name!r}; the model takes {[t.name for t in self.inputs]}",
                    hint="give one array per model input",
                )
            value = np.asarray(inputs[info.name])
            if info.shape is not None:
                if value.ndim != len(info.shape):
                    raise InputError(
                        f"input {info.name!r} expects rank {len(info.shape)} {info.shape_str()}, got shape {list(value.shape)}",
                        hint="check the batch axis and the layout (NCHW vs NHWC)",
                    )
                for axis, (want, got) in enumerate(zip(info.shape, value.shape)):
                    if axis == 0 and self.fixed_batch:
                        continue  # run one sample at a time (see run / value_and_grad)
                    if isinstance(want, int) and want > 0 and want != got:
                        raise InputError(
                            f"input {info.name!r} expects {info.shape_str()}, got {list(value.shape)} "
                            f"(axis {axis}: {got} != {want})",
                            hint="resize the input or check the layout and channel count",
                        )
            if np.issubdtype(value.dtype, np.floating) or np.issubdtype(info.dtype, np.floating):
                if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
                    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
                    raise InputError(
                        f"input {info.name!r} contains {bad} NaN or infinite value(s)",
                        hint="check the preprocessing that produced the array",
                    )
            if value.dtype != info.dtype:
                value = value.astype(info.dtype)
            out[info.name] = value
        return out

    @cached_property
    def fixed_batch(self) -> bool:
        """True when every input declares a static batch of 1 (many exports hard-code it).

        Such models are still given whole batches: :meth:`run` and :meth:`value_and_grad` then
        go one sample at a time and stack the results.
        """
        return all(
            t.shape is not None and len(t.shape) > 0 and t.shape[0] == 1 for t in self.inputs
        )

    @cached_property
    def batch_free(self) -> Model | None:
        """This model with its fixed batch of 1 freed (:mod:`onnxviz.batching`), when the rewrite
        applies and reproduces the original on two samples at once; ``None`` otherwise
        (including for a model whose batch is already free)."""
        from .batching import free_batch, verify_free_batch

        if not self.fixed_batch:
            return None
        k = 1
        proto = free_batch(self.proto, self.graph, k)
        if proto is None:
            return None
        free = Model(proto, path=self.path)
        if not verify_free_batch(self.graph, lambda f: self.ort.run(f), lambda f: free.ort.run(f), k):
            return None
        free.__dict__["rows_independent"] = True  # just verified: two samples at once = one at a time
        return free

    @cached_property
    def rows_independent(self) -> bool:
        """Whether a batch's rows go through the model independently: its outputs on two random
        samples at once equal those on each sample alone (checked once, two onnxruntime
        forwards). A model with a fixed batch of 1: whether that batch could be freed. A model
        with other dynamic dims than the batch: ``False`` (there is no size to check at).

        The compiled backward runs independent rows as parallel halves; methods, which split rows
        into chunks anyway, say so themselves and never pay for this check."""
        from .batching import verify_free_batch

        if self.fixed_batch:
            return self.batch_free is not None
        if not all(t.shape and all(isinstance(d, int) and d > 0 for d in t.shape[1:]) for t in self.inputs):
            return False
        return verify_free_batch(self.graph, lambda f: self.ort.run(f), lambda f: self.ort.run(f), 1)

    def size_free(self, tensors: Sequence[str], axes: Sequence[int], size: Sequence[int]) -> Model | None:
        """The fully convolutional part of this model that computes ``tensors``, with its input's
        batch and spatial ``axes`` freed, when it runs at ``size`` on those axes and reproduces
        this model's ``tensors`` at the declared size; ``None`` otherwise (e.g. a Reshape or
        Gemm lies on the way). One check per set of tensors and size."""
        from .batching import free_size

        key = (tuple(tensors), tuple(axes), tuple(size))
        cache = self.__dict__.setdefault("_size_free", {})
        if key in cache:
            return cache[key]
        result: Model | None = None
        info = self.inputs[0]
        if len(self.inputs) == 1 and info.shape and all(isinstance(info.shape[a], int) for a in axes):
            try:
                free = Model(free_size(self.proto, self.graph, tensors, axes), path=self.path)
                rng = np.random.default_rng(0)
                declared = tuple(d if isinstance(d, int) and d > 0 else 1 for d in info.shape)
                x = rng.random(declared).astype(info.dtype)
                want = self.run({info.name: x}, list(tensors))
                got = free.ort.run({info.name: x}, list(tensors))
                other = list(declared)
                for a, n in zip(axes, size):
                    other[a] = int(n)
                free.ort.run({info.name: rng.random(other).astype(info.dtype)}, list(tensors))
                if all(np.allclose(got[t], want[t], rtol=1e-4, atol=1e-5) for t in tensors):
                    result = free
            except Exception as e:  # onnxruntime refusing the size is the expected "no"
                log.info("tensors %s cannot run at another input size: %s", list(tensors), str(e).strip()[:200])
        cache[key] = result
        return result

    @property
    def fixed_batch_declared(self) -> int | None:
        """The batch size every input declares as the same fixed number, else ``None``."""
        sizes = {t.shape[0] if t.shape else None for t in self.inputs}
        k = sizes.pop() if len(sizes) == 1 else None
        return k if isinstance(k, int) and k > 0 else None

    @cached_property
    def batch_limit(self) -> int | None:
        """The batch size calls must be split into, or ``None`` when any batch runs in one call.

        A model that declares a fixed batch of 1 gets its batch axis freed when that is verified
        to give the same outputs (most exports only hard-code it in Reshape targets); its batches
        then run whole, through a rewritten copy (:meth:`run`, :meth:`value_and_grad`).
        """
        if self.batch_free is not None:
            return None
        return self.fixed_batch_declared

    def _batch_size(self, feeds: Mapping[str, np.ndarray]) -> int:
        sizes = {v.shape[0] for v in feeds.values() if v.ndim}
        if len(sizes) > 1:
            raise InputError(
                f"inputs have different batch sizes {sorted(sizes)}", hint="give every input the same batch"
            )
        return sizes.pop() if sizes else 1

    def run(
        self, inputs: np.ndarray | Mapping[str, np.ndarray], taps: list[str] | tuple[str, ...] = ()
    ) -> dict[str, np.ndarray]:
        """Forward pass in onnxruntime; returns the outputs and the tapped tensors by name."""
        feeds = self.feeds(inputs)
        n = self._batch_size(feeds)
        if not self.fixed_batch or n == 1:
            return self.ort.run(feeds, taps)
        if self.batch_free is not None:
            return self.batch_free.run(feeds, taps)
        parts = [self.ort.run({k: v[i : i + 1] for k, v in feeds.items()}, taps) for i in range(n)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def evaluate(
        self, inputs: np.ndarray | Mapping[str, np.ndarray], names: Sequence[str], *, dtype: Any = np.float32
    ) -> dict[str, np.ndarray]:
        """Values of tensors ``names`` from the numpy engine (float32 or float64; only the part of
        the graph they need runs), whole batches handled as :meth:`run` does."""
        feeds = self.feeds(inputs)
        n = self._batch_size(feeds)
        if not self.fixed_batch or n == 1:
            return self.engine.run(feeds, list(names), dtype=dtype)
        if self.batch_free is not None:
            return self.batch_free.evaluate(feeds, names, dtype=dtype)
        parts = [self.engine.run({k: v[i : i + 1] for k, v in feeds.items()}, list(names), dtype=dtype) for i in range(n)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    @cached_property
    def _ortgrad_refused(self) -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
        """(wrt, seeded tensors) combinations the compiled backward cannot do (found once)."""
        return set()

    def _ortgrad(self) -> Any:
        from .backends.ortgrad import OrtGradBackend

        backend = self.__dict__.get("_ortgrad_backend")
        if backend is None:
            backend = OrtGradBackend(self.graph, self.proto)
            self.__dict__["_ortgrad_backend"] = backend
        return backend

    @cached_property
    def engine(self) -> Any:
        """The numpy engine for this model (interpreter and reverse-mode autodiff)."""
        from .backends.numpy.engine import NumpyEngine

        return NumpyEngine(self.graph, ort=self.ort)

    def value_and_grad(
        self,
        inputs: np.ndarray | Mapping[str, np.ndarray],
        seeds: Mapping[str, Any],
        wrt: Sequence[str] | None = None,
        *,
        values: Sequence[str] = (),
        dtype: Any = np.float32,
        rules: Mapping[str, Any] | None = None,
        forward: str = "numpy",
        engine: str = "auto",
        independent_rows: bool | None = None,
        sum_rows: bool = False,
    ) -> Any:
        """Values of the seeded and requested tensors and the gradients of ``sum <seed, tensor>``.

        ``seeds`` maps tensor names to cotangent arrays or to functions of the tensor's value;
        ``wrt`` defaults to the first model input. Returns a
        :class:`onnxviz.backends.numpy.engine.GradResult`.

        ``engine``: ``"numpy"`` is the reference interpreter (float64, per-call ``rules``,
        ``forward="onnxruntime"`` for the hybrid); ``"ortgrad"`` compiles the forward and the
        backward into one onnxruntime model (:mod:`onnxviz.backends.ortgrad`, float32, the common
        CNN ops); ``"auto"`` (default) uses ``"ortgrad"`` for float32 calls without ``rules`` whose
        path it covers and falls back to ``"numpy"`` otherwise.

        ``independent_rows=True`` is the caller's word that the model treats the rows of the batch
        independently (the methods, which split rows into chunks freely, say it): the compiled
        backward may then run halves of the batch in parallel. ``None`` (default) checks it once
        for a batch of two or more (:attr:`rows_independent`). Results do not depend on it.
        ``sum_rows=True`` returns the gradients summed over the batch (shape ``(1, ...)``); the
        compiled backward then sums inside the graph, before the first linear ops' backward.
        """
        from .backends.numpy.engine import GradResult

        wrt = tuple(wrt) if wrt is not None else (self.inputs[0].name,)
        feeds = self.feeds(inputs)
        n = self._batch_size(feeds)
        self.engine.check_names(wrt, "wrt")
        self.engine.check_names(tuple(seeds), "objective")
        self.engine.check_names(tuple(values), "requested")
        self.engine.check_path(wrt, tuple(seeds))
        if engine not in ("auto", "numpy", "ortgrad"):
            raise InputError(f"unknown gradient engine {engine!r}", hint="use 'auto', 'numpy' or 'ortgrad'")
        compiled = engine == "ortgrad" or (
            engine == "auto"
            and np.dtype(dtype) == np.float32
            and not rules
            and forward == "numpy"
            and (wrt, tuple(seeds)) not in self._ortgrad_refused
        )

        def one(f: Mapping[str, np.ndarray], s: Mapping[str, Any]) -> Any:
            nonlocal compiled, independent_rows
            if compiled:
                if independent_rows is None:
                    independent_rows = self._batch_size(f) > 1 and self.rows_independent
                try:
                    return self._ortgrad().value_and_grad(f, s, wrt, values=values, independent_rows=independent_rows,
                                                          sum_rows=sum_rows)
                except UnsupportedOpError:
                    if engine == "ortgrad":
                        raise
                    self._ortgrad_refused.add((wrt, tuple(seeds)))  # remember: go straight to numpy
                    compiled = False
            result = self.engine.value_and_grad(f, s, wrt, values=values, dtype=dtype, rules=rules, forward=forward)  # type: ignore[arg-type]
            if sum_rows:
                result = GradResult(result.values, {k: g.sum(axis=0, keepdims=True) for k, g in result.grads.items()})
            return result

        if not self.fixed_batch or n == 1:
            return one(feeds, seeds)
        if self.batch_free is not None:
            return self.batch_free.value_and_grad(feeds, seeds, wrt, values=values, dtype=dtype, rules=rules,
                                                  forward=forward, engine=engine, independent_rows=independent_rows,
                                                  sum_rows=sum_rows)
        results = []
        for i in range(n):
            sample_seeds = {
                k: (_row_seed(s, i) if callable(s) else np.asarray(s)[i : i + 1]) for k, s in seeds.items()
            }
            results.append(one({k: v[i : i + 1] for k, v in feeds.items()}, sample_seeds))
        join = (lambda arrays: np.sum(arrays, axis=0)) if sum_rows else np.concatenate
        return GradResult(
            {k: np.concatenate([r.values[k] for r in results]) for k in results[0].values},
            {k: join([r.grads[k] for r in results]) for k in results[0].grads},
        )

    def gradient(
        self,
        inputs: np.ndarray | Mapping[str, np.ndarray],
        target: Target = None,
        *,
        output: str | None = None,
        wrt: str | None = None,
        backend: str = "numpy",
        dtype: Any = np.float32,
        rules: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """Gradient of ``output[:, target]`` summed over the batch w.r.t. ``wrt`` (default: first input).

        ``target`` is a class index, one index per sample, a cotangent array of the output's shape,
        or ``None`` for each sample's top class. ``backend`` is ``"numpy"`` or ``"torch"``.
        """
        out_name = output or self.outputs[0].name
        wrt_name = wrt or self.inputs[0].name

        def seed(value: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
            t = target
            if rows is not None and t is not None and not isinstance(t, (int, np.integer)):
                t = np.asarray(t)[rows]  # per-sample targets when run one sample at a time
            return output_seed(value, t, name=out_name)

        if backend == "torch":
            from .backends.torch import TorchBackend

            return TorchBackend(self.graph).gradient(self.feeds(inputs), {out_name: seed}, wrt_name, dtype=dtype)
        if backend != "numpy":
            raise InputError(f"unknown backend {backend!r}", hint="use 'numpy' or 'torch'")
        result = self.value_and_grad(inputs, {out_name: seed}, (wrt_name,), dtype=dtype, rules=rules)
        return result.grads[wrt_name]


def _row_seed(seed: Any, row: int) -> Any:
    """A seed function for sample ``row`` of a batch that is evaluated one sample at a time.

    The function sees a batch of one; index-based seeds (one class per sample) must know which
    sample it is, so functions that accept a ``rows`` keyword get it.
    """

    try:
        takes_rows = "rows" in inspect.signature(seed).parameters
    except (TypeError, ValueError):
        takes_rows = False

    def seed_row(value: np.ndarray) -> np.ndarray:
        return seed(value, rows=np.array([row])) if takes_rows else seed(value)

    return seed_row


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(
            f"{name!r} is not an ONNX model (it cannot be parsed as a ModelProto: {e})",
            hint="the file may be truncated, or another format (TensorFlow, PyTorch .pt, Keras .h5)",
        ) from e
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise ModelLoadError(
            f"{name!r} is not an ONNX model (no graph or IR version in it)",
            hint="the file may be truncated, or another format (TensorFlow, PyTorch .pt, Keras .h5)",
        )
    return proto


def _has_external(proto: onnx.ModelProto) -> bool:
    return any(
        external_data_helper.uses_external_data(t)
        for t in external_data_helper._get_all_tensors(proto)  # noqa: SLF001
    )


def _load_external(proto: onnx.ModelProto, path: Path) -> None:
    base = path.resolve().parent
    for tensor in external_data_helper._get_all_tensors(proto):  # noqa: SLF001 (public helper since onnx 1.7)
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or base not in target.parents:
            raise ModelLoadError(
                f"tensor {tensor.name!r} in {str(path)!r} points to external data {location!r} outside "
                "the model's folder; refused",
                hint="external data files must sit beside the model (or below its folder)",
            )
        if not target.is_file():
            raise ModelLoadError(
                f"external data file {location!r} of tensor {tensor.name!r} is missing (looked in {str(base)!r})",
                hint="copy the data file(s) that came with the model next to the .onnx file",
            )
    try:
        external_data_helper.load_external_data_for_model(proto, str(base))
    except Exception as e:  # truncated data files raise assorted errors
        raise ModelLoadError(
            f"the external data of {str(path)!r} cannot be read: {e}",
            hint="the data file may be truncated; copy it again from the source",
        ) from e


def _dtype_of(t: onnx.TensorProto) -> np.dtype:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
