"""A gradient fence for the residual stream: the identity, whose backward pass hands the
incoming gradient on through an op that XLA's CPU compiler cannot fuse into its consumers.

Only on a CPU, where XLA otherwise recomputes the residual gradient's running sum in every
consumer; forward values and gradients are unchanged.
Design notes: docs/design/models.md.
"""

from __future__ import annotations

from keras import ops

from vitbench.models.attention import on_cpu


@ops.custom_gradient
def _fenced(x):
    def gradient(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        first = ops.reshape(upstream, (-1,))[0]
        return ops.cond((first == first) | (first != first),
                        lambda: upstream, lambda: ops.negative(upstream))
    return x, gradient


def fence_gradient(x):
    """`x` itself; on a CPU its gradient is materialised once, not fused into each consumer."""
    return _fenced(x) if on_cpu() else x
