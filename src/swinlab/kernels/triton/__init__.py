"""Fused Triton kernels of window attention (GPU; testable on CPU with ``TRITON_INTERPRET=1``).

``TRITON_INTERPRET=1`` must be set before ``triton`` is first imported for the interpreter to be used.
"""

from .window_kernel import DEVICES, INTERPRETED, attend, window_attention

__all__ = ["DEVICES", "INTERPRETED", "attend", "window_attention"]
