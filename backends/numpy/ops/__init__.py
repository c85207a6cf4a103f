"""ONNX op families of the numpy engine, one module each.

Importing this package registers every op in :data:`onnxviz.backends.numpy.registry.REGISTRY`.
Registration is explicit: adding a family means adding its module name here.
"""

from __future__ import annotations

from . import elementwise  # noqa: F401
from . import activation  # noqa: F401
from . import softmax  # noqa: F401
from . import conv  # noqa: F401
from . import pool  # noqa: F401
from . import norm  # noqa: F401
from . import matmul  # noqa: F401
from . import reduce  # noqa: F401
from . import shape  # noqa: F401
from . import tensor  # noqa: F401
from . import resize  # noqa: F401
from . import quant  # noqa: F401

__all__ = [
    "elementwise",
    "activation",
    "softmax",
    "conv",
    "pool",
    "norm",
    "matmul",
    "reduce",
    "shape",
    "tensor",
    "resize",
    "quant",
]
