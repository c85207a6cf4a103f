"""shape ops: forward and VJP side by side."""

from __future__ import annotations
