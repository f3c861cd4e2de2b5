"""Vision Transformer in Keras 3 (`keras.ops` and Keras layers only: runs on JAX and TensorFlow).

Layout, initialisers and layer names follow the official `vit_jax/models_vit.py` and its `.npz`
keys. Inputs are float NHWC images in [-1, 1]; `model(images)` returns float32 logits.
Design notes: docs/design/models.md.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from vitbench.models import prompts
from vitbench.models.attention import MultiHeadDotProductAttention
from vitbench.models.dropout import Dropout, random_dropout
from vitbench.models.gradient_fence import fence_gradient
from vitbench.models.zoo import TRAINABLE, ImageSize, ViTConfig, as_hw

LAYER_NORM_EPSILON = 1e-6


def _xavier_uniform_flat(fan_in: int, fan_out: int):
    """Glorot-uniform computed on the flattened (fan_in, fan_out) matrix.

    Keras' glorot on a 3-D attention kernel (D, heads, head_dim) would count the fans as a
    convolution's; Flax initialises the flattened matrix, which is what this reproduces.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(-limit, limit)


class PrefixTokens(layers.Layer):
    """Prepends `count` learned tokens, the weight `weight_name`, to the token sequence."""

    count, weight_name, initializer = 1, "tokens", "zeros"

    def build(self, input_shape):
        setattr(self, self.weight_name, self.add_weight(
            name=self.weight_name, shape=(1, self.count, input_shape[-1]),
            initializer=self.initializer))

    def call(self, tokens):
        prefix = ops.cast(getattr(self, self.weight_name), tokens.dtype)
        prefix = ops.broadcast_to(prefix, (ops.shape(tokens)[0], self.count, tokens.shape[-1]))
        return ops.concatenate([prefix, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + self.count
        return (input_shape[0], length, input_shape[2])


@keras.saving.register_keras_serializable(package="vitbench")
class ClassToken(PrefixTokens):
    """Prepends a learned class token (initialised to zeros) to the token sequence."""

    weight_name = "cls"


@keras.saving.register_keras_serializable(package="vitbench")
class RegisterTokens(PrefixTokens):
    """Prepends `count` learned register tokens (Darcet et al. 2024) to the token sequence."""

    weight_name = "reg"

    @property
    def initializer(self):
        return keras.initializers.RandomNormal(stddev=1e-6)

    def __init__(self, count: int, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def get_config(self):
        return {**super().get_config(), "count": self.count}


@keras.saving.register_keras_serializable(package="vitbench")
class InputNormalization(layers.Layer):
    """Maps [-1, 1] images to the (pixel / 255 - mean) / std a checkpoint was trained on."""

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = tuple(mean), tuple(std)

    def call(self, images):
        scale = [0.5 / s for s in self.std]
        offset = [(0.5 - m) / s for m, s in zip(self.mean, self.std)]
        return (images * ops.cast(scale, images.dtype)) + ops.cast(offset, images.dtype)

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


@keras.saving.register_keras_serializable(package="vitbench")
class LayerScale(layers.Layer):
    """Multiplies a residual branch by learned per-channel scales (CaiT, DeiT III, DINOv2)."""

    def __init__(self, init_value: float, **kwargs):
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init_value))

    def call(self, x):
        return x * ops.cast(self.scale, x.dtype)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package="vitbench")
class PositionEmbedding(layers.Layer):
    """Adds a learned position embedding of shape (1, tokens, D) ("from BERT": normal(0.02))."""

    def build(self, input_shape):
        self.pos_embedding = self.add_weight(
            name="pos_embedding", shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, tokens):
        return tokens + ops.cast(self.pos_embedding, tokens.dtype)


@keras.saving.register_keras_serializable(package="vitbench")
class TokenPool(layers.Layer):
    """Reduces the token sequence to one vector: the class token, or the mean ("gap") of the
    tokens after the `num_prefix_tokens` (class and register tokens)."""

    def __init__(self, classifier: str, num_prefix_tokens: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.classifier, self.num_prefix_tokens = classifier, num_prefix_tokens

    def call(self, tokens):
        if self.classifier == "token":
            return tokens[:, 0]
        return ops.mean(tokens[:, self.num_prefix_tokens:], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "classifier": self.classifier,
                "num_prefix_tokens": self.num_prefix_tokens}


@keras.saving.register_keras_serializable(package="vitbench")
class EncoderBlock(layers.Layer):
    """Pre-LN Transformer block: x + MHA(LN(x)), then x + MLP(LN(x)), with dropout and drop-path.

    Sub-layer names are the official ones (LayerNorm_0, MultiHeadDotProductAttention_1,
    LayerNorm_2, MlpBlock_3/Dense_0, MlpBlock_3/Dense_1). `class_token_only=True` returns the
    first token's row alone, (batch, 1, D): it attends to every token, and nothing computed
    only for the other rows is. On a CPU each residual sum passes
    through `fence_gradient`, which keeps XLA from recomputing the residual stream's gradient
    in every consumer (see `vitbench.models.gradient_fence`); values are unchanged.
    """

    def __init__(self, hidden_size, mlp_dim, num_heads, dropout=0.0, attention_dropout=0.0,
                 drop_path=0.0, gelu="tanh", remat=False, layer_scale=None,
                 norm_epsilon=LAYER_NORM_EPSILON, lora_rank=0, lora_alpha=None, **kwargs):
        super().__init__(**kwargs)
        if remat and attention_dropout > 0:
            raise ValueError("remat needs attention_dropout 0: Keras' attention layer draws "
                             "its dropout seeds inside the rematerialised computation")
        self.remat = remat
        self.hidden_size, self.mlp_dim, self.num_heads = hidden_size, mlp_dim, num_heads
        self.dropout, self.attention_dropout = dropout, attention_dropout
        self.drop_path, self.gelu = drop_path, gelu
        self.layer_scale, self.norm_epsilon = layer_scale, norm_epsilon
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        attention_init = _xavier_uniform_flat(hidden_size, hidden_size)
        mlp_bias_init = keras.initializers.RandomNormal(stddev=1e-6)
        self.norm_attention = layers.LayerNormalization(epsilon=norm_epsilon, name="LayerNorm_0")
        self.attention = MultiHeadDotProductAttention(
            num_heads, hidden_size // num_heads, dropout=attention_dropout,
            kernel_initializer=attention_init, lora_rank=lora_rank, lora_alpha=lora_alpha,
            name="MultiHeadDotProductAttention_1")
        self.norm_mlp = layers.LayerNormalization(epsilon=norm_epsilon, name="LayerNorm_2")
        self.mlp_in = layers.Dense(mlp_dim, kernel_initializer="glorot_uniform",
                                   bias_initializer=mlp_bias_init, name="Dense_0")
        self.mlp_out = layers.Dense(hidden_size, kernel_initializer="glorot_uniform",
                                    bias_initializer=mlp_bias_init, name="Dense_1")
        self.dropout_layer = Dropout(dropout)
        # Drop-path (stochastic depth): one Bernoulli draw per example for a whole branch.
        self.drop_path_layer = Dropout(drop_path, noise_shape=(None, 1, 1))
        self.scales = ([LayerScale(layer_scale, name=f"LayerScale_{i}") for i in (1, 3)]
                       if layer_scale else [])

    def build(self, input_shape):
        for scale in self.scales:
            scale.build(input_shape)
        self.norm_attention.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm_mlp.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x, training=None, return_attention=False, class_token_only=False):
        if return_attention or not (self.remat and training):
            return self._forward(x, training, return_attention, class_token_only=class_token_only)
        # Rematerialised (jax.checkpoint on JAX): only x is kept for the backward pass. The
        # dropout seeds are drawn here, outside, in the order the layers would draw them, so
        # the recomputation repeats the same masks and the random stream is the one without
        # remat; `training` stays a Python value.
        seeds = {layer.name: [layer.seed_generator.next() for _ in range(calls)]
                 for layer, calls in ((self.dropout_layer, 3), (self.drop_path_layer, 2))
                 if layer.rate > 0}
        return keras.remat(lambda x, seeds: self._forward(
            x, training, seeds=seeds, class_token_only=class_token_only))(x, seeds)

    def _forward(self, x, training=None, return_attention=False, seeds=None,
                 class_token_only=False):
        dropout, drop_path = (self._dropper(layer, training, seeds)
                              for layer in (self.dropout_layer, self.drop_path_layer))
        y = self.norm_attention(x)
        # Only the class token's row goes on: it attends to every token, nothing else is kept.
        query, x = (y[:, :1], x[:, :1]) if class_token_only else (y, x)
        y, scores = self.attention(query, y, return_attention_scores=True, training=training) \
            if return_attention else (self.attention(query, y, training=training), None)
        scale_attention, scale_mlp = self.scales or (lambda y: y,) * 2
        x = fence_gradient(x + drop_path(scale_attention(dropout(y))))
        y = self.norm_mlp(x)
        y = dropout(self.mlp_out(dropout(GELU[self.gelu](self.mlp_in(y)))))
        x = fence_gradient(x + drop_path(scale_mlp(y)))
        return (x, scores) if return_attention else x

    @staticmethod
    def _dropper(layer, training, seeds=None):
        """`layer` applied in `training` mode; with `seeds` (pre-drawn, by layer name) the same
        dropout as a stateless op that takes the layer's next pre-drawn seed at each call."""
        if seeds is None:
            return lambda y: layer(y, training=training)
        if layer.name not in seeds:  # rate 0
            return lambda y: y
        draws = iter(seeds[layer.name])
        return lambda y: random_dropout(y, layer.rate, layer.noise_shape, seed=next(draws))

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "mlp_dim": self.mlp_dim,
                "num_heads": self.num_heads, "dropout": self.dropout,
                "attention_dropout": self.attention_dropout, "drop_path": self.drop_path,
                "gelu": self.gelu, "remat": self.remat, "layer_scale": self.layer_scale,
                "norm_epsilon": self.norm_epsilon, "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha}


GELU = {
    "tanh": lambda x: ops.gelu(x, approximate=True),
    "exact": lambda x: ops.gelu(x, approximate=False),
    # x * sigmoid(1.702 x), as OpenAI's CLIP was trained with.
    "quick": lambda x: x * ops.sigmoid(ops.cast(1.702, x.dtype) * x),
}


def _drop_path_rates(config: ViTConfig):
    """Linearly increasing drop-path rate, 0 at the first block (as timm and big_vision do)."""
    if config.num_layers == 1:
        return [config.stochastic_depth]
    return [config.stochastic_depth * i / (config.num_layers - 1) for i in range(config.num_layers)]


@keras.saving.register_keras_serializable(package="vitbench")
class VisionTransformer(keras.Model):
    """A functional Keras ViT: float NHWC images in [-1, 1] -> float32 logits.

    `num_classes=0` builds the model without a head; it then returns the pre-logit features.
    Besides `model(images)`, `feature_extractor()` returns pre-logits and logits together and
    `attention_maps(images)` the attention weights of every layer.

    Args:
        config: the architecture, a `ViTConfig` or a dict of its fields.
        num_classes: outputs of the zero-initialised head; 0 for no head.
        image_size: input size in pixels, an int or (height, width).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: `num_classes` is not a whole number >= 0; the image size is not a
            positive int or pair of them, or is smaller than a patch; a config field is
            invalid.
        TypeError: `config` is a dict with unknown fields.
    """

    def __init__(self, config: ViTConfig | dict, num_classes: int = 1000,
                 image_size: ImageSize = 224, **kwargs):
        config = ViTConfig(**config) if isinstance(config, dict) else config
        config.check_num_classes(num_classes)
        height, width = as_hw(image_size)
        rows, cols = config.grid((height, width))
        images = keras.Input((height, width, 3), name="images")
        stem = [InputNormalization(*config.normalization, name="normalize")
                ] if config.normalization else []
        stem += [
            layers.Conv2D(config.hidden_size, config.patch_size, strides=config.patch_size,
                          padding="valid", kernel_initializer="lecun_normal",
                          use_bias=not config.pre_norm, name="embedding"),
            layers.Reshape((rows * cols, config.hidden_size), name="patches_to_tokens"),
        ]
        prefix = [RegisterTokens(config.num_registers, name="reg")] if config.num_registers \
            else []
        if config.has_class_token:
            prefix.append(ClassToken(name="cls"))
        position = [PositionEmbedding(name="posembed_input")]
        stem += prefix + position if config.pos_embed_prefix else position + prefix
        stem.append(Dropout(config.dropout, name="embedding_dropout"))
        if config.pre_norm:
            stem.append(layers.LayerNormalization(epsilon=config.norm_epsilon, name="pre_norm"))
        blocks = [
            EncoderBlock(config.hidden_size, config.mlp_dim, config.num_heads, config.dropout,
                         config.attention_dropout, rate, config.gelu, config.remat,
                         config.layer_scale, config.norm_epsilon, config.lora_rank,
                         config.lora_alpha, name=f"encoderblock_{i}")
            for i, rate in enumerate(_drop_path_rates(config))
        ]
        prompt_layers = prompts.layers_for(
            config.prompt_tokens, config.prompt_depth, len(blocks), config.num_prefix_tokens,
            config.prompt_dropout) if config.prompt_tokens else [None] * len(blocks)
        head = [layers.LayerNormalization(epsilon=config.norm_epsilon, name="encoder_norm"),
                TokenPool(config.classifier, config.num_prefix_tokens + config.prompt_tokens,
                          name="pool")]
        if config.final_norm == "pooled":
            head.reverse()
        if config.representation_size:
            head.append(layers.Dense(config.representation_size, activation="tanh",
                                     kernel_initializer="lecun_normal", name="pre_logits"))
        if num_classes:
            head.append(layers.Dense(num_classes, kernel_initializer="zeros",
                                     bias_initializer="zeros", dtype="float32", name="head"))
        x = images
        for layer in stem:
            x = layer(x)
        for i, (prompt, block) in enumerate(zip(prompt_layers, blocks)):
            x = prompt(x) if prompt is not None else x
            last = i == len(blocks) - 1
            x = block(x, class_token_only=config.classifier == "token") if last else block(x)
        for layer in head:
            x = layer(x)
        super().__init__(inputs=images, outputs=x, **kwargs)
        self.config, self.num_classes, self.image_size = config, num_classes, (height, width)
        self._stem, self._blocks, self._head = stem, blocks, head
        self._prompts = prompt_layers
        trains = TRAINABLE[config.trainable]
        for variable in self.trainable_variables:
            if not (variable.path.startswith("head/") or trains(variable.path)):
                variable.trainable = False

    @property
    def image_dtype(self) -> str:
        """The dtype the patch embedding computes in (bfloat16 under `mixed_bfloat16`): images
        in it give the same outputs as float32 ones, with fewer bytes to copy to the device."""
        return self.get_layer("embedding").compute_dtype

    @property
    def features_layer_name(self) -> str:
        """The layer whose output is the pre-logit representation."""
        return "pre_logits" if self.config.representation_size else "pool"

    def feature_extractor(self) -> keras.Model:
        """A model (sharing these weights) mapping images to {'pre_logits', 'logits'}."""
        outputs = {"pre_logits": self.get_layer(self.features_layer_name).output}
        if self.num_classes:
            outputs["logits"] = self.output
        return keras.Model(self.input, outputs, name=f"{self.name}_features")

    def set_remat(self, remat: bool) -> VisionTransformer:
        """Turns rematerialisation of the encoder blocks on or off (e.g. for a model restored
        from a checkpoint saved without it); takes effect at the next compilation."""
        self.config = self.config.replace(remat=remat)
        for block in self._blocks:
            block.remat = remat
        return self

    def attention_maps(self, images):
        """Runs the model eagerly and returns (outputs, attention weights of every layer).

        `outputs` is the model's output (logits, or features without a head); the attention
        weights are a list with one (batch, heads, tokens, tokens) array per layer, query
        tokens on axis 2. Needs flash attention off (it never materialises the weights).
        """
        x, attention = ops.convert_to_tensor(images), []
        for layer in self._stem:
            x = layer(x)
        for prompt, block in zip(self._prompts, self._blocks):
            x = prompt(x) if prompt is not None else x
            x, scores = block(x, return_attention=True)
            attention.append(scores)
        for layer in self._head:
            x = layer(x)
        return x, attention

    def get_config(self):
        return {"config": self.config.__dict__.copy(), "num_classes": self.num_classes,
                "image_size": list(self.image_size), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def create_model(name_or_config: str | ViTConfig, num_classes: int = 1000,
                 image_size: ImageSize = 224, **overrides) -> VisionTransformer:
    """A randomly initialised ViT from a zoo name ('vit_b16') or a ViTConfig.

    Args:
        name_or_config: a zoo name (see `vitbench.models.zoo.ZOO`) or a `ViTConfig`.
        num_classes: outputs of the zero-initialised head; 0 for no head.
        image_size: input size in pixels, an int or (height, width).
        **overrides: `ViTConfig` fields to change (e.g. `dropout=0.1`, `remat=True`).

    Returns:
        The `VisionTransformer`, named after the config.

    Raises:
        KeyError: an unknown zoo name.
        TypeError: an override that is not a `ViTConfig` field.
        ValueError: an invalid field value, class count or image size.
    """
    from vitbench.models.zoo import get_config

    config = (get_config(name_or_config, **overrides) if isinstance(name_or_config, str)
              else name_or_config.replace(**overrides))
    return VisionTransformer(config, num_classes=num_classes, image_size=image_size,
                             name=config.name)
