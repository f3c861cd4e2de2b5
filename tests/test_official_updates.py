"""The training updates equal the official code's, update for update.

Fine-tuning against vit_jax/train.py's `optax.chain(clip_by_global_norm(1.0), sgd(lr_fn,
momentum=0.9))` with vit_jax's warm-up + cosine `lr_fn` and micro-batch gradients averaged
into each update (`utils.accumulate_gradient`); pretraining against big_vision's
`optax.make` chain (clip, `scale_by_adam`, `scale(lr)`, `add_decayed_weights(wd)`,
`scale_by_schedule`, `scale(-1)`), with vitbench's decay on every weight (a documented
difference: big_vision decays kernels only). Both oracles are optax itself; the gradients are
the model's own, at the oracle's weights. Deliberately wrong rules fail the same check.
"""

import keras
import numpy as np
import optax
import pytest
from conftest import TINY

from vitbench.models.vit import create_model
from vitbench.train import finetune, losses, optimizers, pretrain, recipes
from vitbench.train.schedules import WarmupCosine

pytestmark = pytest.mark.backends

UPDATES, BATCH, MICRO, WARMUP = 10, 8, 4, 3
# float32 rounding over ten updates, as a share of the change they made: SGD carries a
# gradient's rounding as it is; Adam divides each gradient by its own size, which makes the
# rounding of the near-zero ones count (measured: 2.4e-7; 0.83e-5 and 0.94e-5).
SGD_TOLERANCE, ADAM_TOLERANCE = 2e-6, 4e-5


def vit_jax_lr_fn(base, total_steps, warmup_steps, decay="cosine"):
    """vit_jax/utils.py `create_learning_rate_schedule` (and big_vision's with `base`)."""
    def step_fn(step):
        progress = np.clip((step - warmup_steps) / float(total_steps - warmup_steps), 0.0, 1.0)
        lr = base * (0.5 * (1.0 + np.cos(np.pi * progress)) if decay == "cosine"
                     else 1.0 - progress)
        if warmup_steps:
            lr = lr * np.minimum(1.0, step / warmup_steps)
        return lr
    return step_fn


def tiny_vit(classes, representation=False):
    keras.utils.set_random_seed(0)
    return create_model(TINY, num_classes=classes, image_size=16,
                        representation_size=TINY.hidden_size if representation else None)


def batches(classes, multi_hot=False, seed=0):
    """UPDATES x BATCH images and labels, in the order they are trained: the label shifts the
    first channel, so the loss falls and the gradients' norm crosses the clipping norm."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, (UPDATES * BATCH, 16, 16, 3)).astype("float32")
    if multi_hot:
        y = (rng.uniform(size=(len(x), classes)) < 0.3).astype("float32")
        x[..., 0] += (y @ np.linspace(-0.5, 0.5, classes))[:, None, None]
        return x, y
    y = rng.integers(0, classes, len(x))
    x[..., 0] += (y / (classes - 1) - 0.5)[:, None, None]
    return x, y


def gradients(model, loss, weights, x, y):
    """The gradients of `loss` (the batch mean) over the model's trainable weights, at
    `weights`."""
    for variable, value in zip(model.trainable_variables, weights):
        variable.assign(np.asarray(value))
    if keras.backend.backend() == "jax":
        import jax

        fixed = [v.value for v in model.non_trainable_variables]

        def mean_loss(trainable):
            logits, _ = model.stateless_call(trainable, fixed, x, training=True)
            return loss(y, logits)

        return [np.asarray(g) for g in
                jax.grad(mean_loss)([v.value for v in model.trainable_variables])]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    return [np.asarray(g) for g in tape.gradient(value, model.trainable_variables)]


def oracle(model, loss, data, transform):
    """The weights after UPDATES updates of optax `transform`, each on the mean of its
    micro-batches' gradients (as vit_jax's `accumulate_gradient`); and the global norm of
    each update's gradients."""
    params = [np.asarray(v) for v in model.trainable_variables]
    state, norms = transform.init(params), []
    x, y = data
    for update in range(UPDATES):
        micro = [gradients(model, loss, params, x[start:start + MICRO], y[start:start + MICRO])
                 for start in range(update * BATCH, (update + 1) * BATCH, MICRO)]
        grads = [np.mean(parts, axis=0) for parts in zip(*micro)]
        norms.append(float(optax.global_norm(grads)))
        steps, state = transform.update(grads, state, params)
        params = optax.apply_updates(params, steps)
    return [np.asarray(p) for p in params], np.asarray(norms)


def trained(model, optimizer, loss, data):
    """The trainable weights after `fit` on the data in order, MICRO images per pass."""
    model.compile(optimizer=optimizer, loss=loss)
    model.fit(*data, batch_size=MICRO, epochs=1, shuffle=False, verbose=0)
    return [np.asarray(v) for v in model.trainable_variables]


def distance(model, weights, reference, start):
    """|weights - reference| over the change the reference made from `start`, leaving out the
    attention's key biases: their true gradient is 0 (a key bias adds the same score to every
    key), so Adam turns their rounding noise into steps of the rate's size."""
    kept = [i for i, v in enumerate(model.trainable_variables) if not v.path.endswith("key/bias")]
    flat = [np.concatenate([np.ravel(ws[i]) for i in kept]) for ws in (weights, reference, start)]
    return float(np.linalg.norm(flat[0] - flat[1]) / np.linalg.norm(flat[1] - flat[2]))


def fine_tuning_chain(lr, momentum=0.9, warmup=WARMUP):
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.sgd(vit_jax_lr_fn(lr, UPDATES, warmup), momentum=momentum))


@pytest.mark.slow
def test_fine_tuning_takes_the_official_update_and_wrong_rules_fail():
    lr, classes = 0.1, 2
    data, loss = batches(classes), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    config = finetune.TrainConfig(lr=lr, steps=UPDATES, batch_size=BATCH, micro_batch_size=MICRO,
                                  warmup_steps=WARMUP)

    def start():  # the fine-tuning start: a zero head
        model = tiny_vit(classes)
        for variable in model.get_layer("head").weights:
            variable.assign(np.zeros(variable.shape, "float32"))
        return model

    model = start()
    initial = [np.asarray(v) for v in model.trainable_variables]
    official, norms = oracle(start(), loss, data, fine_tuning_chain(lr))
    assert norms.min() < 1.0 < norms.max(), norms  # clipping both on and off
    ours = trained(start(), finetune.make_optimizer(config), loss, data)
    assert distance(model, ours, official, initial) < SGD_TOLERANCE
    # The same check fails a wrong rule: Keras' own momentum, momentum 0.8, no warm-up.
    keras_rule = trained(start(), keras.optimizers.SGD(
        WarmupCosine(lr, UPDATES, WARMUP, BATCH // MICRO), momentum=0.9, global_clipnorm=1.0,
        gradient_accumulation_steps=BATCH // MICRO), loss, data)
    assert distance(model, keras_rule, official, initial) > 100 * SGD_TOLERANCE
    for wrong in (fine_tuning_chain(lr, momentum=0.8), fine_tuning_chain(lr, warmup=0)):
        other, _ = oracle(start(), loss, data, wrong)
        assert distance(model, ours, other, initial) > 100 * SGD_TOLERANCE


def big_vision_chain(recipe):
    """big_vision/optax.py `make`: wd is not multiplied by the base rate there (its configs
    fold the rate in by hand), only by the schedule; vitbench's `weight_decay` is the paper's
    (multiplied by the rate), hence `wd = weight_decay * lr`."""
    return optax.chain(
        optax.clip_by_global_norm(recipe.grad_clip_norm),
        optax.scale_by_adam(b1=recipe.b1, b2=recipe.b2, eps=recipe.epsilon),
        optax.scale(recipe.lr),
        optax.add_decayed_weights(recipe.weight_decay * recipe.lr),
        optax.scale_by_schedule(vit_jax_lr_fn(1.0, UPDATES, recipe.warmup_steps,
                                              recipe.lr_decay)),
        optax.scale(-1.0))


@pytest.mark.slow
@pytest.mark.parametrize("loss_name, decay", [("softmax", "linear"), ("sigmoid", "cosine")])
def test_pretraining_takes_big_visions_update_and_keras_adam_fails(loss_name, decay):
    classes, multi_hot = 5, loss_name == "sigmoid"
    recipe = recipes.Recipe(dataset="demo", lr=0.003, warmup_steps=WARMUP, lr_decay=decay,
                            weight_decay=0.3, grad_clip_norm=2.0, batch_size=BATCH)
    data, loss = batches(classes, multi_hot), losses.get_loss(loss_name)
    model = tiny_vit(classes, True)
    initial = [np.asarray(v) for v in model.trainable_variables]
    ours = trained(tiny_vit(classes, True),
                   pretrain.make_optimizer(recipe, UPDATES, BATCH // MICRO), loss, data)
    official, norms = oracle(tiny_vit(classes, True), loss, data, big_vision_chain(recipe))
    assert norms.min() < recipe.grad_clip_norm < norms.max(), norms
    assert distance(model, ours, official, initial) < ADAM_TOLERANCE
    keras_adam = trained(tiny_vit(classes, True), keras.optimizers.AdamW(
        pretrain.make_schedule(recipe, UPDATES, BATCH // MICRO), weight_decay=0.3,
        epsilon=recipe.epsilon, global_clipnorm=recipe.grad_clip_norm,
        gradient_accumulation_steps=BATCH // MICRO), loss, data)
    assert distance(model, keras_adam, official, initial) > 100 * ADAM_TOLERANCE


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_momentum_is_optaxs_trace_in_its_dtype(dtype):
    """Fed the same gradients, the weights follow optax's `sgd(accumulator_dtype=...)`: a
    bfloat16 trace (the official fine-tuning code's) is stored rounded and used unrounded."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(8)]

    def official(accumulator_dtype):
        chain = optax.sgd(vit_jax_lr_fn(0.1, 8, 3), momentum=0.9,
                          accumulator_dtype=accumulator_dtype)
        params, state = start, chain.init(start)
        for step in grads:
            updates, state = chain.update(step, state, params)
            params = optax.apply_updates(params, updates)
        return [np.asarray(p) for p in params]

    variables = [keras.Variable(w) for w in start]
    optimizer = optimizers.SGD(WarmupCosine(0.1, 8, 3), momentum_dtype=dtype)
    for step in grads:
        optimizer.apply(step, variables)
    assert {str(v.dtype) for v in optimizer.momentums} == {dtype}
    for ours, theirs in zip(variables, official(getattr(jnp, dtype))):
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-6, atol=1e-7)
    if dtype == "bfloat16":  # the rounding shows: a float32 trace ends elsewhere
        assert not np.allclose(np.asarray(variables[0]), official(jnp.float32)[0], atol=1e-4)


def test_the_optimizers_refuse_what_they_do_not_implement():
    with pytest.raises(ValueError, match="Nesterov"):
        optimizers.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="AMSGrad"):
        optimizers.AdamW(0.1, amsgrad=True)
