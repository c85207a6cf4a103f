"""Run audit checks on a model, each isolated and timed, and collect an :class:`AuditResult`.

A check is a small class with a stable ``id`` and a ``run(ctx)`` that returns findings as data.
Checks share one :class:`AuditContext`: the model, the settings, the input batches (given, or a
seeded probe set) and passes that several checks read (e.g. one tapped forward over every
tensor), computed once on first use and timed under ``"shared:<name>"``.

A check that raises becomes an error-level ``audit.internal`` finding naming the check; a check
that does not apply raises :class:`SkipCheck` and is listed as skipped with the reason.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import InputError, OnnxvizError
from ..model import Model
from .findings import AuditResult, Finding, SkippedCheck

__all__ = [
    "AuditSettings",
    "AuditContext",
    "Check",
    "SkipCheck",
    "INTERNAL",
    "all_checks",
    "select_checks",
    "audit",
]

log = logging.getLogger(__name__)

#: The check id of the finding that stands for a check that crashed.
INTERNAL = "audit.internal"

T = TypeVar("T")


@dataclass(frozen=True)
class AuditSettings:
    """Budgets and tolerances of an audit.

    ``budget_bytes`` bounds the tensors read whole per forward pass (tensors the activation
    scan cannot summarize in the graph, and taps that locate a divergence; deep models are
    tapped in several passes); ``probe_samples`` random images seeded by ``seed`` stand in for
    inputs when none are given, at ``probe_size`` pixels where the model leaves the spatial size
    open. Two runtimes agree on a tensor when ``max|a - b| <= atol + rtol * max|b|``; the numpy
    engine is compared on the first ``engine_samples`` samples only (its semantics, which that
    check is about, show on any input; its first forward also folds every conv's weights).
    Inputs run ``batch_size`` samples per forward pass (one at a time on a model that declares
    a fixed batch of 1).
    """

    budget_bytes: int = 512 * 2**20
    probe_samples: int = 8
    probe_size: int = 224
    seed: int = 0
    rtol: float = 1e-3
    atol: float = 1e-5
    engine_samples: int = 1
    batch_size: int = 8


class SkipCheck(Exception):
    """Raised by a check that does not apply to this model or these inputs.

    ``findings`` (usually one info) are still reported, for a skip the reader should see among
    the findings too (e.g. which op stops the gradient methods).
    """

    def __init__(self, reason: str, *, findings: Sequence[Finding] = ()) -> None:
        super().__init__(reason)
        self.findings = tuple(findings)


class Check(abc.ABC):
    """One audit check. The class docstring says what it flags and why that matters."""

    #: Stable id, ``family.name``; also the ``check`` of every finding it returns.
    id: ClassVar[str]
    #: Whether the check runs the model (and so needs inputs or a probe set).
    needs_inputs: ClassVar[bool] = False

    @abc.abstractmethod
    def run(self, ctx: AuditContext) -> list[Finding]:
        """The findings on ``ctx.model``; an empty list when there is nothing to say."""

    def finding(self, severity: str, message: str, **kwargs: Any) -> Finding:
        return Finding(self.id, severity, message, **kwargs)  # type: ignore[arg-type]


class AuditContext:
    """What the checks of one audit share; built by :func:`audit`, read-only for checks except
    for :meth:`shared`, which memoises passes several checks need."""

    def __init__(
        self,
        model: Model,
        inputs: np.ndarray | Mapping[str, np.ndarray] | None,
        settings: AuditSettings,
    ) -> None:
        self.model = model
        self.settings = settings
        self._given = inputs
        self._shared: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def shared(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per audit, timed as ``shared:<name>``; a failure is re-raised to
        every check that asks (each then reports it as its own crash or skip)."""
        if name not in self._shared:
            start = time.perf_counter()
            try:
                self._shared[name] = (True, compute())
            except Exception as e:  # remembered so a second check does not redo a failing pass
                self._shared[name] = (False, e)
            self.timings[f"shared:{name}"] = time.perf_counter() - start
        ok, value = self._shared[name]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ inputs
    @property
    def batches(self) -> list[dict[str, np.ndarray]]:
        """The validated input batches, split to the model's fixed batch size where it has one
        (a model exported with batch 1 runs one sample a pass: on big models that costs no
        more than a batch, and needs no freed copy)."""
        return self.shared("inputs", self._make_batches)[0]

    @property
    def inputs_description(self) -> str:
        return self.shared("inputs", self._make_batches)[1]

    def _make_batches(self) -> tuple[list[dict[str, np.ndarray]], str]:
        from .activations import probe_inputs

        given = self._given
        if given is None:
            feeds, what = probe_inputs(self.model, self.settings)
        else:
            feeds = dict(getattr(given, "feeds", given)) if not isinstance(given, np.ndarray) else given
            what = "given inputs"
        if isinstance(feeds, np.ndarray):
            feeds = {self.model.inputs[0].name: feeds} if len(self.model.inputs) == 1 else feeds
        batches = split_batches(self.model, feeds, self.settings.batch_size)  # type: ignore[arg-type]
        checked = [self.model.feeds(b) for b in batches]
        n = sum(int(next(iter(b.values())).shape[0]) if next(iter(b.values())).ndim else 1 for b in checked)
        return checked, f"{what} ({n} sample{'s' if n != 1 else ''})"

    @property
    def runnable(self) -> Model:
        """The model the gradient checks run: the model itself, or its copy with the fixed batch
        of 1 freed (:attr:`onnxviz.model.Model.batch_free`: same tensor names, verified to
        compute the same outputs), so that a batch of gradient rows runs in one pass."""
        return self.shared("runnable", self._runnable)

    def _runnable(self) -> Model:
        if self.ort_load_error is not None:
            return self.model
        try:
            free = self.model.batch_free
        except Exception:  # onnxruntime raises its own types; the checks report the failure themselves
            return self.model
        return free if free is not None else self.model

    @property
    def ort_load_error(self) -> Exception | None:
        """Why onnxruntime cannot create a session for the model, or None when it can."""
        return self.shared("ort-session", self._try_session)

    def _try_session(self) -> Exception | None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            ort.InferenceSession(self.model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            return e
        return None

    def require_ort(self) -> None:
        if self.ort_load_error is not None:
            raise SkipCheck("onnxruntime cannot load the model (see graph.ort-support)")


def split_batches(model: Model, feeds: Mapping[str, np.ndarray], size: int | None = None) -> list[dict[str, np.ndarray]]:
    """Split a batch into pieces the model accepts when its batch dimension is fixed and smaller
    (a model exported with batch 1 still audits over 8 images, one run each), else into pieces
    of at most ``size`` samples (no limit when None)."""
    sizes = []
    fixed = False
    for info in model.inputs:
        value = feeds.get(info.name)
        if value is None or info.shape is None or not info.shape or np.ndim(value) != len(info.shape):
            continue
        want, got = info.shape[0], int(np.shape(value)[0])
        fixed = fixed or (isinstance(want, int) and want > 0)
        if isinstance(want, int) and 0 < want < got and got % want == 0:
            sizes.append(want)
    leading = {np.shape(v)[0] if np.ndim(v) else None for v in feeds.values()}
    if sizes and len(set(sizes)) == 1:
        step = sizes[0]
    elif not fixed and size is not None and size > 0 and len(leading) == 1 and None not in leading:
        step = size  # a free batch: cut only to bound each pass
    else:
        return [dict(feeds)]
    total = int(np.shape(next(iter(feeds.values())))[0])
    if step >= total:
        return [dict(feeds)]
    if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in feeds.values()):
        raise InputError(
            "the model's inputs are given with different batch sizes",
            hint="give every input the same number of samples",
        )
    return [{k: np.asarray(v)[i : i + step] for k, v in feeds.items()} for i in range(0, total, step)]


# ---------------------------------------------------------------------- registry
def all_checks() -> tuple[type[Check], ...]:
    """Every check, family by family, in the order they run."""
    from . import activations, graph, runtime, sanity, weights

    families: tuple[Sequence[type[Check]], ...] = (
        graph.CHECKS,
        weights.CHECKS,
        activations.CHECKS,
        runtime.CHECKS,
        # Explanation sanity (needs gradients): skipped, with an info finding naming the op,
        # when the numpy engine refuses the model's input gradient.
        sanity.CHECKS,
    )
    return tuple(c for family in families for c in family)


def select_checks(selection: Iterable[str] | None) -> tuple[type[Check], ...]:
    """The checks named by id or by family (``"weights"`` selects every ``weights.*``)."""
    checks = all_checks()
    if selection is None:
        return checks
    wanted = [s.strip() for s in selection if s.strip()]
    ids = {c.id for c in checks}
    families = {c.id.split(".", 1)[0] for c in checks}
    unknown = [w for w in wanted if w not in ids and w not in families]
    if unknown:
        raise InputError(
            f"unknown audit check(s) {unknown}",
            hint="choose from: " + ", ".join(sorted(families)) + ", " + ", ".join(sorted(ids)),
        )
    return tuple(c for c in checks if c.id in wanted or c.id.split(".", 1)[0] in wanted)


def audit(
    model: Model,
    inputs: np.ndarray | Mapping[str, np.ndarray] | Any | None = None,
    *,
    checks: Iterable[str] | None = None,
    budget_bytes: int = AuditSettings.budget_bytes,
    probe_samples: int = AuditSettings.probe_samples,
    probe_size: int = AuditSettings.probe_size,
    seed: int = AuditSettings.seed,
    rtol: float = AuditSettings.rtol,
    atol: float = AuditSettings.atol,
    engine_samples: int = AuditSettings.engine_samples,
    batch_size: int = AuditSettings.batch_size,
    raise_errors: bool = False,
) -> AuditResult:
    """Audit ``model``: every check (or those named in ``checks``, ids or families).

    ``inputs`` are one array, a dict by input name, or :class:`onnxviz.inputs.PreparedInputs`;
    without them the input-dependent checks use ``probe_samples`` seeded random images in the
    model's range. ``raise_errors`` lets a crashing check raise instead of becoming an
    ``audit.internal`` finding (for debugging).
    """
    settings = AuditSettings(
        budget_bytes=budget_bytes, probe_samples=probe_samples, probe_size=probe_size, seed=seed, rtol=rtol, atol=atol,
        engine_samples=engine_samples, batch_size=batch_size,
    )
    ctx = AuditContext(model, inputs, settings)
    findings: list[Finding] = []
    ran: list[str] = []
    skipped: list[SkippedCheck] = []
    timings: dict[str, float] = {}
    uses_inputs = False
    for cls in select_checks(checks):
        start = time.perf_counter()
        try:
            found = cls().run(ctx)
        except SkipCheck as e:
            skipped.append(SkippedCheck(cls.id, str(e)))
            findings.extend(e.findings)
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            if raise_errors:
                raise
            log.debug("audit check %s crashed", cls.id, exc_info=True)
            found = [_internal(cls.id, e)]
        finally:
            timings[cls.id] = time.perf_counter() - start
        ran.append(cls.id)
        uses_inputs = uses_inputs or cls.needs_inputs
        findings.extend(found)
    timings.update(ctx.timings)
    described = ""
    if uses_inputs:
        try:
            described = ctx.inputs_description
        except Exception:  # the input failure itself is reported by the checks that needed them
            described = "inputs could not be prepared"
    return AuditResult(
        model=model.name,
        findings=tuple(findings),
        checks_run=tuple(ran),
        skipped=tuple(skipped),
        timings=timings,
        inputs=described,
    )


def _internal(check: str, e: Exception) -> Finding:
    if isinstance(e, OnnxvizError):
        message, hint = e.message, e.hint
    else:
        text = str(e).strip().splitlines()
        message = f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
        hint = "this is a bug in onnxviz's audit; rerun with --debug for the traceback and report it"
    return Finding(
        INTERNAL,
        "error",
        f"check {check} could not finish: {message}",
        evidence={"check": check, "exception": type(e).__name__},
        hint=hint,
    )
