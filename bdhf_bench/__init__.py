"""bdhf-bench: block-diagonal Hessian-free optimization, benchmarked DeepOBS-style."""

import warnings

__version__ = "0.1.0"

# torch loads its forward-mode decompositions through torch.jit.script the first time a jvp
# runs (our output-space Hessians, curvlinops) and warns that torch.jit.script is deprecated:
# a message about torch's internals that users can do nothing about.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
)
