"""Graph checks: validity, versions, domains, what the runtimes can run and differentiate,
dead weight in the graph, names, training leftovers, dims and external data.

None of these run the model (``graph.ort-support`` only creates an onnxruntime session).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import numpy as np
import onnx

from ..backends.numpy.registry import NON_DIFFERENTIABLE, REGISTRY
from ..graph import Node
from .findings import Finding
from .runner import AuditContext, Check

__all__ = ["CHECKS", "STANDARD_DOMAINS", "ORT_DOMAINS"]

#: Domains of the ONNX standard.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})
#: Contrib domains that onnxruntime runs (and no other runtime does).
ORT_DOMAINS = frozenset({"com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc", "com.microsoft.experimental"})
#: Lowest ai.onnx opset onnxruntime runs; lowest IR version it loads.
ORT_MIN_OPSET = 7
ORT_MIN_IR = 3

_MAX_LISTED = 10
_TWO_GB = 2**31


def _listed(items: list[str]) -> list[str]:
    return items[:_MAX_LISTED]


def _more(items: list[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _names_used_inside(g: onnx.GraphProto) -> set[str]:
    """Every tensor name a (sub)graph reads, including outer-scope names its nodes capture."""
    used: set[str] = set()
    for n in g.node:
        used.update(i for i in n.input if i)
        for sub in _subgraphs(n):
            used |= _names_used_inside(sub)
            used.update(o.name for o in sub.output)
    return used


def _implicit_inputs(ctx: AuditContext) -> dict[int, set[str]]:
    """Outer-scope names read by each control-flow node's subgraphs, by node index."""
    out: dict[int, set[str]] = {}
    for i, n in enumerate(ctx.model.proto.graph.node):
        subs = list(_subgraphs(n))
        if subs:
            out[i] = set().union(*(_names_used_inside(s) for s in subs))
    return out


# ---------------------------------------------------------------------------------------- checks
class CheckerCheck(Check):
    """The full ``onnx.checker`` check (with strict shape inference) fails: an error.

    An invalid model may load in one runtime and not in the next version of it, and every
    analysis built on the graph rests on it being well formed.
    """

    id = "graph.checker"

    def run(self, ctx: AuditContext) -> list[Finding]:
        model = ctx.model
        target: onnx.ModelProto | str = model.proto
        if model.path is not None and model.proto.ByteSize() >= _TWO_GB:
            target = str(model.path)
        try:
            onnx.checker.check_model(target, full_check=True)
        except Exception as e:  # the checker raises ValidationError, InferenceError and others
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            return [
                self.finding(
                    "error",
                    f"onnx.checker rejects the model: {lines[0] if lines else type(e).__name__}",
                    evidence={"error": type(e).__name__, "details": lines[1:4]},
                    hint="re-export the model; onnx.checker.check_model(path, full_check=True) gives the details",
                )
            ]
        return []


class VersionsCheck(Check):
    """IR version and opsets that the installed onnx does not know (error), or below what
    onnxruntime runs (warning).

    A model newer than the installed onnx cannot be validated or shape-inferred; very old
    opsets are not supported by current runtimes.
    """

    id = "graph.versions"

    def run(self, ctx: AuditContext) -> list[Finding]:
        proto = ctx.model.proto
        found: list[Finding] = []
        ir = int(proto.ir_version)
        evidence = {"ir_version": ir, "onnx": onnx.__version__, "onnx_ir_version": int(onnx.IR_VERSION)}
        if ir > onnx.IR_VERSION:
            found.append(
                self.finding(
                    "error",
                    f"IR version {ir} is newer than the installed onnx {onnx.__version__} supports (IR {onnx.IR_VERSION})",
                    evidence=evidence,
                    hint="upgrade onnx and onnxruntime, or re-export with an older IR version",
                )
            )
        elif ir < ORT_MIN_IR:
            found.append(
                self.finding(
                    "warning",
                    f"IR version {ir} is older than onnxruntime loads (IR {ORT_MIN_IR} and later)",
                    evidence=evidence,
                    hint="convert the model with onnx.version_converter or re-export it",
                )
            )
        newest = int(onnx.defs.onnx_opset_version())
        for imp in proto.opset_import:
            if imp.domain not in ("", "ai.onnx"):
                continue
            ev = {"opset": int(imp.version), "onnx_max_opset": newest, "onnx": onnx.__version__}
            if imp.version > newest:
                found.append(
                    self.finding(
                        "error",
                        f"ai.onnx opset {imp.version} is newer than the installed onnx {onnx.__version__} knows (up to {newest})",
                        evidence=ev,
                        hint="upgrade onnx and onnxruntime, or export at an older opset",
                    )
                )
            elif imp.version < ORT_MIN_OPSET:
                found.append(
                    self.finding(
                        "warning",
                        f"ai.onnx opset {imp.version} is older than onnxruntime supports (opset {ORT_MIN_OPSET} and later)",
                        evidence=ev,
                        hint="convert it: onnx.version_converter.convert_version(model, 13)",
                    )
                )
        return found


class CustomDomainsCheck(Check):
    """Ops outside the ONNX standard: com.microsoft contrib ops run in onnxruntime only (info);
    ops from a domain no known runtime implements are an error.

    A model with an unknown domain needs the exporter's custom-op library wherever it is
    deployed, and none of onnxviz's engines can run it.
    """

    id = "graph.custom-domains"

    def run(self, ctx: AuditContext) -> list[Finding]:
        proto = ctx.model.proto
        local_functions = {(f.domain, f.name) for f in proto.functions}
        by_domain: dict[str, list[Node]] = {}
        for n in ctx.model.graph.nodes:
            if n.domain not in STANDARD_DOMAINS:
                by_domain.setdefault(n.domain, []).append(n)
        found: list[Finding] = []
        for domain, nodes in sorted(by_domain.items()):
            ops = sorted({n.op_type for n in nodes})
            evidence = {"domain": domain, "ops": ops, "nodes": _listed([n.label for n in nodes]), "count": len(nodes)}
            local = [n for n in nodes if (n.domain, n.op_type) in local_functions]
            if len(local) == len(nodes):
                found.append(
                    self.finding(
                        "info",
                        f"{len(nodes)} node(s) call model-local functions of domain {domain!r} ({', '.join(ops)}); runtimes inline them",
                        node=nodes[0].label,
                        evidence=evidence,
                    )
                )
            elif domain in ORT_DOMAINS:
                found.append(
                    self.finding(
                        "info",
                        f"{len(nodes)} node(s) use onnxruntime contrib ops of domain {domain!r} ({', '.join(ops)}); "
                        "they run in onnxruntime only",
                        node=nodes[0].label,
                        evidence=evidence,
                        hint="other runtimes (TensorRT, OpenVINO, TFLite converters) and onnxviz's numpy engine cannot run them",
                    )
                )
            else:
                found.append(
                    self.finding(
                        "error",
                        f"{len(nodes)} node(s) use ops of custom domain {domain!r} ({', '.join(ops)}), which no known runtime implements",
                        node=nodes[0].label,
                        evidence=evidence,
                        hint="ship and register the custom-op library (onnxruntime SessionOptions.register_custom_ops_library), "
                        "or re-export with standard ops",
                    )
                )
        return found


_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'")
_NOT_REGISTERED = re.compile(r"([\w.]*):(\w+)\((-?\d+)\) is not a registered function/op")


class OrtSupportCheck(Check):
    """onnxruntime cannot create a session for the model: an error naming the op and node.

    Feature maps, activation checks and runtime comparisons all need onnxruntime; a model it
    cannot load will not deploy with it either.
    """

    id = "graph.ort-support"

    def run(self, ctx: AuditContext) -> list[Finding]:
        import onnxruntime

        e = ctx.ort_load_error
        if e is None:
            return []
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        evidence: dict[str, object] = {"onnxruntime": onnxruntime.__version__, "error": first[:300]}
        node = None
        m = _NO_KERNEL.search(text)
        if m:
            op, version, node = m.group(1), int(m.group(2)), m.group(3)
            evidence.update(op=op, since_version=version)
            message = f"onnxruntime {onnxruntime.__version__} has no CPU kernel for {op} (version {version}) at node {node!r} with these types"
        else:
            m2 = _NOT_REGISTERED.search(text)
            if m2:
                domain, op = m2.group(1), m2.group(2)
                nodes = [n.label for n in ctx.model.graph.nodes if n.op_type == op]
                node = nodes[0] if nodes else None
                evidence.update(op=op, domain=domain)
                message = f"onnxruntime {onnxruntime.__version__} does not know op {domain + ':' if domain else ''}{op}"
                if node:
                    message += f" (node {node!r})"
            else:
                message = f"onnxruntime {onnxruntime.__version__} cannot load the model: {first[:300]}"
        return [
            self.finding(
                "error",
                message,
                node=node,
                evidence=evidence,
                hint="use ops (and input types) onnxruntime supports, register the custom-op library, or upgrade onnxruntime",
            )
        ]


class GradientSupportCheck(Check):
    """Input-dependent ops that onnxviz's numpy engine cannot run or differentiate (warning: the
    gradient methods — saliency, Integrated Gradients, Grad-CAM, feature visualization — are
    unavailable), and gradients that every path cuts at a non-differentiable op (info).

    Forward-only features (kernels, feature maps, occlusion) still work through onnxruntime.
    """

    id = "graph.gradient-support"

    def run(self, ctx: AuditContext) -> list[Finding]:
        g = ctx.model.graph
        opset = g.opset
        no_forward: dict[str, list[str]] = {}
        no_vjp: dict[str, list[str]] = {}
        cutters: dict[str, list[str]] = {}
        for n in g.nodes:
            if not any(o in g.dynamic for o in n.outputs):
                continue
            standard = n.domain in ("", "ai.onnx")
            if not standard or REGISTRY.get_forward(n.op_type, opset) is None:
                no_forward.setdefault(n.op_type if standard else f"{n.domain}:{n.op_type}", []).append(n.label)
            elif n.op_type in NON_DIFFERENTIABLE:
                cutters.setdefault(n.op_type, []).append(n.label)
            elif REGISTRY.get_vjp(n.op_type, opset) is None:
                no_vjp.setdefault(n.op_type, []).append(n.label)
        found: list[Finding] = []
        for op, labels in sorted(no_forward.items()):
            found.append(
                self.finding(
                    "warning",
                    f"the numpy engine cannot run {op} (opset {opset}; {len(labels)} node(s): {_more(labels)}): "
                    "gradient methods and the numpy cross-check are unavailable",
                    node=labels[0],
                    evidence={"op": op, "opset": opset, "nodes": _listed(labels), "count": len(labels), "missing": "forward"},
                    hint="forward-only features (kernels, feature maps, occlusion) still work through onnxruntime",
                )
            )
        for op, labels in sorted(no_vjp.items()):
            found.append(
                self.finding(
                    "warning",
                    f"the numpy engine cannot differentiate {op} (opset {opset}; {len(labels)} node(s): {_more(labels)}): "
                    "gradient methods (saliency, Integrated Gradients, Grad-CAM, feature visualization) are unavailable",
                    node=labels[0],
                    evidence={"op": op, "opset": opset, "nodes": _listed(labels), "count": len(labels), "missing": "vjp"},
                    hint="forward-only features (kernels, feature maps, occlusion) still work through onnxruntime",
                )
            )
        if cutters and not no_forward and not no_vjp and not _gradient_reaches_output(ctx):
            ops = sorted(cutters)
            labels = [label for op in ops for label in cutters[op]]
            found.append(
                self.finding(
                    "info",
                    f"every path from the input to the outputs passes a non-differentiable op ({', '.join(ops)}): "
                    "input gradients are zero",
                    node=labels[0],
                    evidence={"ops": ops, "nodes": _listed(labels), "count": len(labels)},
                    hint="quantized (QDQ) models: explain the float model, or take gradients with the Q/DQ pairs bypassed",
                )
            )
        return found


def _gradient_reaches_output(ctx: AuditContext) -> bool:
    g = ctx.model.graph
    reach = set(g.input_names)
    for n in g.nodes:
        if n.op_type in NON_DIFFERENTIABLE:
            continue
        if any(i in reach for i in n.inputs if i):
            reach.update(o for o in n.outputs if o)
    return any(o in reach for o in g.output_names)


class UnusedInitializersCheck(Check):
    """Initializers that no node reads and that are not graph outputs (warning).

    Left-over weights bloat the file, and often mean an export kept a layer the graph no longer
    uses (e.g. an auxiliary classifier).
    """

    id = "graph.unused-initializers"

    def run(self, ctx: AuditContext) -> list[Finding]:
        proto = ctx.model.proto
        used = _names_used_inside(proto.graph) | {o.name for o in proto.graph.output}
        unused = [t for t in proto.graph.initializer if t.name not in used]
        if not unused:
            return []
        names = [t.name for t in unused]
        size = int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in unused))
        return [
            self.finding(
                "warning",
                f"{len(unused)} initializer(s) are never used ({size} values): {_more(names)}",
                tensor=names[0],
                evidence={"initializers": _listed(names), "count": len(unused), "values": size},
                hint="remove them (onnxsim or onnx.utils.Extractor), or check the export kept the right layers",
            )
        ]


class DeadNodesCheck(Check):
    """Nodes none of whose outputs reach a graph output (warning).

    Runtimes compute them anyway (or silently drop them); they usually mean a branch the
    exporter cut loose, e.g. an auxiliary head or a debugging output.
    """

    id = "graph.dead-nodes"

    def run(self, ctx: AuditContext) -> list[Finding]:
        g = ctx.model.graph
        implicit = _implicit_inputs(ctx)
        needed = set(g.output_names)
        live: set[int] = set()
        for n in reversed(g.nodes):
            if any(o and o in needed for o in n.outputs):
                live.add(n.index)
                needed.update(i for i in n.inputs if i)
                needed.update(implicit.get(n.index, ()))
        dead = [n for n in g.nodes if n.index not in live]
        if not dead:
            return []
        labels = [n.label for n in dead]
        return [
            self.finding(
                "warning",
                f"{len(dead)} node(s) compute outputs that reach no graph output: {_more(labels)}",
                node=labels[0],
                evidence={"nodes": _listed(labels), "ops": dict(Counter(n.op_type for n in dead)), "count": len(dead)},
                hint="remove them (onnxsim, or onnx.utils.extract_model up to the real outputs)",
            )
        ]


class UnusedOpsetsCheck(Check):
    """Opset imports of non-default domains that no node or function uses (warning).

    A runtime may refuse a model that imports a domain it does not know, even when nothing in
    the graph needs it.
    """

    id = "graph.unused-opsets"

    def run(self, ctx: AuditContext) -> list[Finding]:
        proto = ctx.model.proto
        used: set[str] = set()

        def visit(g: onnx.GraphProto) -> None:
            for n in g.node:
                used.add(n.domain)
                for sub in _subgraphs(n):
                    visit(sub)

        visit(proto.graph)
        for f in proto.functions:
            used.add(f.domain)
            used.update(n.domain for n in f.node)
        unused = [imp for imp in proto.opset_import if imp.domain not in ("", "ai.onnx") and imp.domain not in used]
        return [
            self.finding(
                "warning",
                f"opset import {imp.domain!r} (version {imp.version}) is not used by any node",
                evidence={"domain": imp.domain, "version": int(imp.version)},
                hint="drop the import; runtimes that do not know the domain may refuse the model",
            )
            for imp in unused
        ]


class InitializersAsInputsCheck(Check):
    """Initializers also listed as graph inputs (info): an IR < 4 habit.

    Such weights can be overridden by a feed at run time, and runtimes may not constant-fold
    them, which disables optimizations (e.g. Conv+BatchNormalization fusion).
    """

    id = "graph.initializers-as-inputs"

    def run(self, ctx: AuditContext) -> list[Finding]:
        proto = ctx.model.proto
        inits = {t.name for t in proto.graph.initializer}
        listed = [v.name for v in proto.graph.input if v.name in inits]
        if not listed:
            return []
        return [
            self.finding(
                "info",
                f"{len(listed)} initializer(s) are also graph inputs (IR {proto.ir_version} habit): {_more(listed)}",
                tensor=listed[0],
                evidence={"initializers": _listed(listed), "count": len(listed), "ir_version": int(proto.ir_version)},
                hint="they can be overridden by feeds and block constant folding; "
                "onnxruntime's tools/python/remove_initializer_from_input.py removes them",
            )
        ]


class NodeNamesCheck(Check):
    """Duplicate node names (warning) and empty ones (info).

    Tools that address nodes by name (profilers, quantizers, onnxviz's --tensors, partial
    exports) pick the wrong node or none.
    """

    id = "graph.node-names"

    def run(self, ctx: AuditContext) -> list[Finding]:
        names = [n.name for n in ctx.model.graph.nodes]
        found: list[Finding] = []
        dupes = sorted(name for name, k in Counter(names).items() if name and k > 1)
        if dupes:
            found.append(
                self.finding(
                    "warning",
                    f"{len(dupes)} node name(s) are used more than once: {_more(dupes)}",
                    node=dupes[0],
                    evidence={"names": _listed(dupes), "count": len(dupes)},
                    hint="give every node a unique name (onnx-graphsurgeon or a small script can rename them)",
                )
            )
        empty = [n.label for n in ctx.model.graph.nodes if not n.name]
        if empty:
            found.append(
                self.finding(
                    "info",
                    f"{len(empty)} of {len(names)} node(s) have no name; they are shown as op#index",
                    node=empty[0],
                    evidence={"nodes": _listed(empty), "count": len(empty)},
                    hint="exporters name nodes by default; names make profiles and reports readable",
                )
            )
        return found


class TensorNamesCheck(Check):
    """A tensor name defined more than once: by two nodes, or by a node and an initializer or
    graph input (error).

    ONNX graphs are in SSA form; a name with two definitions makes consumers ambiguous and runtimes
    disagree on which value they read.
    """

    id = "graph.tensor-names"

    def run(self, ctx: AuditContext) -> list[Finding]:
        g = ctx.model.proto.graph
        definers: dict[str, list[str]] = {}
        inits = {t.name for t in g.initializer}
        for v in g.input:
            definers.setdefault(v.name, []).append("graph input")
        for name in inits:
            if name not in definers:  # an initializer listed as input is one definition (IR < 4)
                definers.setdefault(name, []).append("initializer")
        for i, n in enumerate(g.node):
            for o in n.output:
                if o:
                    definers.setdefault(o, []).append(f"node {n.name or f'{n.op_type}#{i}'!r}")
        dupes = {k: v for k, v in definers.items() if len(v) > 1}
        return [
            self.finding(
                "error",
                f"tensor {name!r} is defined {len(by)} times ({', '.join(by[:4])})",
                tensor=name,
                evidence={"definitions": by[:_MAX_LISTED], "count": len(by)},
                hint="rename one of them; every tensor must have exactly one producer",
            )
            for name, by in sorted(dupes.items())
        ][:_MAX_LISTED * 2]


class TrainingOpsCheck(Check):
    """Training-only behaviour left in an inference graph: Dropout whose ``training_mode`` is
    true (error; outputs are random), BatchNormalization in training mode (error; outputs depend
    on the batch) or with running-statistics outputs (warning), ops of the training domain.

    Models exported with ``model.train()`` instead of ``model.eval()`` look like this.
    """

    id = "graph.training-ops"

    def run(self, ctx: AuditContext) -> list[Finding]:
        g = ctx.model.graph
        consts = ctx.model.constants
        found: list[Finding] = []
        hint = "export in inference mode (model.eval() in PyTorch, training=False in Keras)"
        for n in g.nodes:
            if n.op_type == "Dropout" and n.domain in ("", "ai.onnx"):
                mode_name = n.inputs[2] if len(n.inputs) > 2 else ""
                if not mode_name:
                    continue
                if mode_name in consts:
                    if bool(np.any(consts[mode_name])):
                        ratio = consts.get(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] else None
                        found.append(
                            self.finding(
                                "error",
                                f"Dropout node {n.label!r} has training_mode=true: it zeroes random units at inference",
                                node=n.label,
                                tensor=n.outputs[0],
                                evidence={"training_mode": True, "ratio": None if ratio is None else float(np.asarray(ratio).reshape(-1)[0])},
                                hint=hint,
                            )
                        )
                else:
                    found.append(
                        self.finding(
                            "warning",
                            f"Dropout node {n.label!r} takes training_mode from the input-dependent tensor {mode_name!r}",
                            node=n.label,
                            evidence={"training_mode": mode_name},
                            hint=hint,
                        )
                    )
            elif n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx"):
                extra = [o for o in n.outputs[1:] if o]
                if int(n.attrs.get("training_mode", 0)):
                    found.append(
                        self.finding(
                            "error",
                            f"BatchNormalization node {n.label!r} has training_mode=1: it normalizes with the batch's statistics",
                            node=n.label,
                            evidence={"training_mode": 1, "outputs": len([o for o in n.outputs if o])},
                            hint=hint,
                        )
                    )
                elif extra:
                    found.append(
                        self.finding(
                            "warning",
                            f"BatchNormalization node {n.label!r} has training outputs (running statistics {extra})",
                            node=n.label,
                            evidence={"extra_outputs": extra[:4], "opset": g.opset},
                            hint=hint + "; before opset 14 these outputs mean training mode",
                        )
                    )
            elif n.domain == "ai.onnx.preview.training":
                found.append(
                    self.finding(
                        "warning",
                        f"node {n.label!r} is a training op ({n.op_type}, domain ai.onnx.preview.training)",
                        node=n.label,
                        evidence={"op": n.op_type},
                        hint=hint,
                    )
                )
        return found


def _value_infos(proto: onnx.ModelProto) -> Iterator[tuple[str, onnx.ValueInfoProto]]:
    g = proto.graph
    inits = {t.name for t in g.initializer}
    for v in g.input:
        if v.name not in inits:
            yield "input", v
    for v in g.output:
        yield "output", v
    for v in g.value_info:
        yield "value_info", v


class InvalidDimsCheck(Check):
    """Dimensions written as ``dim_value`` -1 or 0 (warning), e.g. paddle2onnx's -1 batch.

    ONNX has no "-1 means dynamic": such a dim is invalid; runtimes and converters read it
    differently (some as a literal -1, some refuse), and shape inference breaks on it.
    """

    id = "graph.invalid-dims"

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        for where, v in _value_infos(ctx.model.proto):
            tt = v.type.tensor_type
            if not tt.HasField("shape"):
                continue
            bad = [(axis, int(d.dim_value)) for axis, d in enumerate(tt.shape.dim) if d.HasField("dim_value") and d.dim_value <= 0]
            if not bad:
                continue
            dims = ["?" if not (d.HasField("dim_value") or d.dim_param) else (d.dim_param or str(d.dim_value)) for d in tt.shape.dim]
            found.append(
                self.finding(
                    "warning",
                    f"{where} {v.name!r} declares dim(s) {', '.join(f'{a}={x}' for a, x in bad)} in shape [{', '.join(dims)}]",
                    tensor=v.name,
                    evidence={"where": where, "axes": [a for a, _ in bad], "values": [x for _, x in bad], "shape": dims},
                    hint="write dynamic dims as a symbolic dim_param (e.g. 'batch'), not -1 or 0",
                )
            )
        return found[: _MAX_LISTED * 2]


class DynamicDimsCheck(Check):
    """Graph inputs with symbolic or unknown dims (info): which sizes the model leaves open.

    A dynamic batch is normal; dynamic spatial dims mean inputs must be resized explicitly and
    some runtimes (TensorRT, mobile) need an optimization profile or fixed shapes.
    """

    id = "graph.dynamic-dims"

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        for t in ctx.model.inputs:
            if t.shape is None:
                found.append(self.finding("info", f"input {t.name!r} has no declared shape", tensor=t.name, evidence={"shape": None}))
                continue
            dyn = [(axis, d) for axis, d in enumerate(t.shape) if not isinstance(d, int)]
            if dyn:
                found.append(
                    self.finding(
                        "info",
                        f"input {t.name!r} {t.shape_str()} has dynamic dim(s) " + ", ".join(f"{a} ({d if d else '?'})" for a, d in dyn),
                        tensor=t.name,
                        evidence={"shape": [d if d is not None else "?" for d in t.shape], "axes": [a for a, _ in dyn]},
                    )
                )
        return found


class ExternalDataCheck(Check):
    """Tensors stored outside the .onnx file (info): the data files must travel with the model."""

    id = "graph.external-data"

    def run(self, ctx: AuditContext) -> list[Finding]:
        from onnx import external_data_helper

        model = ctx.model
        proto = model.proto
        if model.path is not None:
            # Loading resolved the external data into the tensors; the file itself still says where it was.
            proto = onnx.load_model(str(model.path), load_external_data=False)
        locations: Counter[str] = Counter()
        tensors = 0
        for t in external_data_helper._get_all_tensors(proto):  # noqa: SLF001 (public helper since onnx 1.7)
            if t.data_location == onnx.TensorProto.EXTERNAL:
                tensors += 1
                info = {e.key: e.value for e in t.external_data}
                locations[info.get("location", "?")] += 1
        if not tensors:
            return []
        files = sorted(locations)
        return [
            self.finding(
                "info",
                f"{tensors} tensor(s) are stored in external data file(s) {_more(files)}",
                evidence={"tensors": tensors, "files": _listed(files)},
                hint="ship the data file(s) beside the .onnx file; they are part of the model",
            )
        ]


CHECKS: tuple[type[Check], ...] = (
    CheckerCheck,
    VersionsCheck,
    CustomDomainsCheck,
    OrtSupportCheck,
    GradientSupportCheck,
    UnusedInitializersCheck,
    DeadNodesCheck,
    UnusedOpsetsCheck,
    InitializersAsInputsCheck,
    NodeNamesCheck,
    TensorNamesCheck,
    TrainingOpsCheck,
    InvalidDimsCheck,
    DynamicDimsCheck,
    ExternalDataCheck,
)
