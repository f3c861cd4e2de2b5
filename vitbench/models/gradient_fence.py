"""A gradient fence for the residual stream: the identity, whose backward pass hands the
incoming gradient on through an op that XLA's CPU compiler cannot fuse into its consumers.

Why: in the backward pass the residual stream's gradient is a running sum, one term per block
(the block's own branch gradients added to the gradient from above). XLA:CPU fuses cheap
elementwise producers into every consumer, duplicating them, and a sum of adds is cheap, so
every consumer of block i's gradient (the transposed copies the weight-gradient matmuls read,
the LayerNorm backward) recomputes the whole sum from the top block down instead of reading it
once: work that grows with the square of the depth. How much XLA duplicates depends on the
tensor sizes. Measured on the 2-core CPU (fp32, `train_on_batch` steps): for ViT-B/16 at batch
8, 2.8 s of an 11 s step went to these fused copies, 0.3 s with the fences, and the step took
8.1 s (profiled runs one after the other); timed in one process, fences on against off, the
step time ratio was 0.68 for ViT-S/16 at batch 8 and 0.78 for the demo's vit_mu8 (32 px, batch
128). ViT-B/16 at batch 32 was unchanged (1.02): at that size XLA does not duplicate the sum.

How: the gradient passes through a conditional (`keras.ops.cond`) whose predicate, `g == g or g
!= g` for the gradient's first element, is always true but is not folded away by the compiler,
so its identity branch runs. A conditional is a boundary XLA does not fuse across, so the
gradient is computed once, into a buffer, before its consumers read it. (The other branch never
runs; it differs from the identity only so that the compiler cannot merge the two.)
`jax.lax.optimization_barrier` would say the same more plainly, but XLA:CPU removes it before
fusion.

Only on a CPU: on a GPU the predicate of a conditional goes to the host, a device sync per
block, and the duplication was seen (and measured) on XLA:CPU only. Forward values and
gradients are unchanged (tested).
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
