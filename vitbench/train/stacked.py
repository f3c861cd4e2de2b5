"""Fine-tuning runs that differ only in their learning rate and seed, trained together (JAX).

The members' weights, optimizer and metric states are stacked along a leading axis and one
compiled step, `jax.vmap` over Keras' own `train_step`, updates all of them: members of one
seed from one batch (one input pipeline and one compilation serve a whole sweep), members of
several seeds each from its seed's stream. Each member keeps its own rate,
momentum, gradient clipping, Polyak average and head, and saves to (and resumes from) its own
workdir in the format `finetune.fine_tune` reads, so a member's numbers equal those of its
separate run up to float rounding.
Design notes: docs/design/training.md.
"""

from __future__ import annotations

import itertools
import time

import jax.numpy as jnp
import numpy as np

from vitbench.train import feed, finetune, interrupt, progress
from vitbench.train.stack import NotStackable, Stack, check_stackable


def _restore_all(workdirs, configs):
    """(restored models or Nones, the step they are at); raises NotStackable where members
    were saved at different steps (they then resume separately)."""
    loaded = [finetune.load_state(workdir) for workdir in workdirs]
    steps = {step for _, step in loaded}
    if len(steps) > 1:
        raise NotStackable(f"the runs' saved states are at different steps {sorted(steps)}")
    for (restored, _), workdir, config in zip(loaded, workdirs, configs):
        finetune.check_accumulation(restored, config.accumulation, workdir)
    return [restored for restored, _ in loaded], steps.pop()


def fine_tune_stacked(models, task, split: str, configs, *, data_dir=None, workdirs=None,
                      checkpoint_every: int = 0, verbose: int = 0, suite_bar=None,
                      device_data: str = "auto"):
    """Trains each `models[i]` with `configs[i]` as `finetune.fine_tune` would, all together.

    Args:
        models: one `VisionTransformer` per member, each with the task's head (built alike:
            same checkpoint, same head); compiled here, or restored from its workdir.
        task, split, data_dir, checkpoint_every, verbose, suite_bar, device_data: as
            `finetune.fine_tune`; one input feeds all members.
        configs: one `TrainConfig` per member; they differ in `lr` and `seed` only. Members
            of one seed read one batch; each seed's stream is its separate run's.
        workdirs: one per member (or None): where each saves and resumes, as a separate run.

    Returns:
        One entry per member: (model, summary) as `finetune.fine_tune` returns them, or a
        `finetune.DivergedError` for a member whose loss became NaN or infinite.

    Raises:
        NotStackable: the members cannot train together (nothing trained).
        KeyboardInterrupt: Ctrl-C, raised between steps (after any save due).
    """

    check_stackable(configs)
    config = configs[0]
    workdirs = list(workdirs or [None] * len(models))
    restored, done = _restore_all(workdirs, configs)
    models = [model if saved is None else saved.set_remat(model.config.remat)
              for model, saved in zip(models, restored)]
    for model, saved, member_config in zip(models, restored, configs):
        if saved is None:
            finetune.compile_for_finetuning(model, member_config)
    saving = bool(checkpoint_every and all(workdirs))
    chunk = checkpoint_every if saving else config.steps
    remaining = (config.steps - done) * config.accumulation
    seeds = sorted({c.seed for c in configs})
    streams, source = feed.seed_streams(
        task, split, config, seeds, data_dir=data_dir, start_batch=done * config.accumulation,
        image_dtype=models[0].image_dtype, device_data=device_data)
    own = len(seeds) > 1  # each member reads its seed's batch
    batches = itertools.islice(
        _per_member(streams, [seeds.index(c.seed) for c in configs]) if own else streams[0],
        remaining)
    first = next(batches, None)
    if first is None:
        first = _any_batch(models[0], len(models) if own else None)
    else:
        batches = itertools.chain([first], batches)
    stack = Stack(models, configs, first, own_batches=own)
    start, logs, step_done, shown = time.perf_counter(), None, done, 0.0
    run_bar = progress.bar(f"{task.name} {split} x{len(models)}",
                           config.steps * config.batch_size, done * config.batch_size,
                           position=1 if suite_bar else 0, leave=suite_bar is None,
                           enabled=bool(verbose))
    with run_bar, interrupt.deferred() as stop_on_ctrl_c:
        for micro, batch in enumerate(batches, 1):
            if (micro - 1) % (chunk * config.accumulation) == 0:  # an epoch of fit starts
                stack.reset_metrics()
            logs = stack.step(batch)
            updates = done + micro // config.accumulation
            if updates > step_done:
                for bar in (run_bar, suite_bar):
                    if bar is not None:
                        bar.update((updates - step_done) * config.batch_size)
                step_done = updates
                if verbose and time.monotonic() - shown >= 1.0:
                    shown = time.monotonic()
                    run_bar.set_postfix({"step": f"{updates}/{config.steps}",
                                         "loss": np.asarray(logs["loss"]).round(4).tolist()})
                if saving and (updates % chunk == 0 or updates == config.steps):
                    _save_members(stack, workdirs, logs, updates)
            if stop_on_ctrl_c.pending:
                raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    return _finish(stack, logs, workdirs, configs, task, done, seconds, source)


def _any_batch(model, members: int | None = None):
    """A batch of zeros in the model's input shape (to build a stack with nothing to train);
    with `members`, one per member, stacked."""
    lead = (members,) if members else ()
    return (np.zeros((*lead, 1, *model.image_size, 3), model.image_dtype),
            np.zeros((*lead, 1), np.int64))


def _per_member(streams, stream_of_member):
    """Batches of every member stacked along a leading axis, member i's from stream
    `stream_of_member[i]`; each stream is read once per step."""
    for batches in zip(*streams):
        yield tuple(jnp.stack([batches[i][part] for i in stream_of_member])
                    for part in range(2))


def _member_logs(logs, index: int) -> dict:
    return {key: float(np.asarray(value)[index]) for key, value in logs.items()}


def _save_members(stack: Stack, workdirs, logs, step: int) -> None:
    """Each member's state saved to its workdir as `finetune.save_state` saves a separate run
    (a member whose loss is not finite keeps its last save)."""
    for index, workdir in enumerate(workdirs):
        member_logs = _member_logs(logs, index)
        if np.isfinite(member_logs.get("loss", np.nan)):
            finetune.save_state(stack.write_back(index), workdir, step, member_logs)


def _finish(stack: Stack, logs, workdirs, configs, task, done, seconds, source):
    """Each member's weights written back (its Polyak average swapped in, as `fit` ends),
    and its result: (model, summary) or a DivergedError."""
    results = []
    for index, (workdir, config) in enumerate(zip(workdirs, configs)):
        model = stack.write_back(index)
        model.optimizer.finalize_variable_values(model.trainable_weights)
        if logs is not None:
            member_logs = _member_logs(logs, index)
        else:  # killed after the last save: the saved logs
            member_logs = finetune.read_state(workdir)["logs"] if workdir else {}
        try:
            summary = finetune.summarize(task, config, member_logs, done, seconds, source)
        except finetune.DivergedError as diverged:
            results.append(diverged)
            continue
        results.append((model, {**summary, "stacked_members": len(configs)}))
    return results
