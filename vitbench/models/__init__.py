"""Vision Transformer models: the zoo of configs and the Keras model."""

from vitbench.models.zoo import (  # noqa: F401 (the package's API)
    ZOO,
    ViTConfig,
    count_flops,
    count_macs,
    count_params,
    get_config,
)
