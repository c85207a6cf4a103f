"""Forward passes through onnxruntime, with taps on any input-dependent tensor.

A tap is an intermediate tensor appended to the graph outputs with a name-only value info: a
declared shape could be wrong and make the session fail to load. Only tensors that depend on a
graph input are tapped; tapping the outputs of constant subgraphs would copy every weight on
every run. onnxruntime never fuses away a graph output, so graph optimizations stay on.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from ..errors import ExecutionError, InputError, TargetError, UnsupportedOpError

if TYPE_CHECKING:
    import onnxruntime as ort

    from ..graph import Graph

__all__ = ["OrtBackend", "make_session"]

_CACHE_SIZE = 4


class OrtBackend:
    """onnxruntime sessions for one model, one per distinct set of taps (a small LRU cache).

    ``optimize=False`` disables every graph optimization (used by audits to compare the two).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        graph: Graph,
        *,
        optimize: bool = True,
        threads: int | None = None,
    ) -> None:
        self._model = model
        self._graph = graph
        self._optimize = optimize
        self._threads = threads
        self._sessions: OrderedDict[tuple[str, ...], ort.InferenceSession] = OrderedDict()

    def _session(self, outputs: tuple[str, ...]) -> ort.InferenceSession:
        key = outputs
        sess = self._sessions.get(key)
        if sess is not None:
            self._sessions.move_to_end(key)
            return sess
        model = onnx.ModelProto()
        model.CopyFrom(self._model)
        present = {o.name for o in model.graph.output}
        for name in outputs:
            if name not in present:
                model.graph.output.append(helper.make_empty_tensor_value_info(name))
        try:
            sess = make_session(model, optimize=self._optimize, threads=self._threads)
        except Exception as e:  # onnxruntime raises its own exception types
            raise _session_error(e, self._graph) from e
        self._sessions[key] = sess
        if len(self._sessions) > _CACHE_SIZE:
            self._sessions.popitem(last=False)
        return sess

    def run(
        self, feeds: Mapping[str, np.ndarray], taps: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run the model; return the graph outputs and every tapped tensor, by name."""
        graph = self._graph
        taps = tuple(dict.fromkeys(taps))
        for name in taps:
            if name not in graph.dynamic and name not in graph.output_names:
                if name in graph.initializers or name in graph.producer:
                    raise TargetError(
                        f"tensor {name!r} is a constant (it does not depend on any input)",
                        hint="read constants with Model.constants instead of tapping them",
                    )
                raise TargetError(
                    f"no tensor named {name!r} in the graph",
                    hint="`onnxviz inspect MODEL` lists the tensor names",
                )
        outputs = tuple(dict.fromkeys(graph.output_names + taps))
        sess = self._session(outputs)
        missing = [n for n in graph.input_names if n not in feeds]
        if missing:
            raise InputError(
                f"missing model input(s) {missing}; the model takes {list(graph.input_names)}",
                hint="give one input per model input (name=file.npy for models with several inputs)",
            )
        try:
            values = sess.run(list(outputs), {k: feeds[k] for k in graph.input_names})
        except Exception as e:
            raise _run_error(e, feeds) from e
        return dict(zip(outputs, values))


def make_session(
    model: onnx.ModelProto, *, optimize: bool = True, threads: int | None = None
) -> ort.InferenceSession:
    """An onnxruntime CPU session with onnxviz's options (raises onnxruntime's own exceptions).

    ``optimize=False`` disables every graph optimization.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # fatal only: a failing run raises with the same message, which callers turn into named
    # errors (or an expected "no", e.g. a size probe); the C++ log would print it twice
    opts.log_severity_level = 4
    # Threads stop spinning when a run returns (they still spin between the parallel sections
    # of a run): onnxviz alternates sessions (a forward, then the compiled backward) and numpy
    # work, and a pool that keeps spinning after its run takes the cores from whatever runs
    # next (on 2 cores, a plain forward right after a compiled backward took 78 ms, not 50).
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


_UNKNOWN_OP = re.compile(r"([\w.]*):(\w+)\((-?\d+)\) is not a registered function/op")
_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'")


def _session_error(e: Exception, graph: Graph) -> Exception:
    text = str(e)
    m = _NO_KERNEL.search(text)
    if m:
        return UnsupportedOpError(
            m.group(1),
            m.group(3),
            int(m.group(2)),
            reason="has no onnxruntime CPU kernel for these input types",
            hint="kernels and the layer table still work; running the model needs an op the runtime supports",
        )
    m = _UNKNOWN_OP.search(text)
    if m:
        domain, op = m.group(1), m.group(2)
        nodes = [n.label for n in graph.nodes if n.op_type == op and n.domain == domain]
        more = f" (and {len(nodes) - 1} more node(s))" if len(nodes) > 1 else ""
        return UnsupportedOpError(
            op,
            nodes[0] if nodes else "?",
            max(int(m.group(3)), 1),
            reason=f"in domain {domain!r} is not known to onnxruntime{more}",
            hint="`onnxviz inspect` and the kernels still work; running the model (feature maps, methods) "
            "needs onnxruntime to know the op: register its custom-op library",
        )
    return ExecutionError(
        f"onnxruntime could not load the model: {text.strip().splitlines()[0] if text.strip() else type(e).__name__}",
        hint="check the model with `onnxviz inspect`; custom-domain ops need their runtime library",
    )


def _run_error(e: Exception, feeds: Mapping[str, np.ndarray]) -> Exception:
    text = str(e).strip()
    shapes = ", ".join(f"{k}: {list(v.shape)} {v.dtype}" for k, v in feeds.items())
    first = text.splitlines()[0] if text else type(e).__name__
    if "INVALID_ARGUMENT" in text or "Invalid rank" in text or "Got invalid dimensions" in text:
        return InputError(
            f"the inputs do not fit the model ({shapes}): {first}",
            hint="check the input size, channel count and layout (`onnxviz inspect MODEL` shows them)",
        )
    return ExecutionError(
        f"onnxruntime failed on inputs ({shapes}): {first}",
        hint="the message names the failing node; try `onnxviz inspect` and check the input values",
    )

