"""Vision Transformer models: the zoo of configs and the Keras model."""

from vitbench.models.zoo import ViTConfig, ZOO, count_flops, count_macs, count_params, get_config
