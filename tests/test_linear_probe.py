"""Linear probes on frozen features: a grid of heads trained together equals each head
trained alone by torch's SGD, as the VPT protocol trains its linear baseline."""

import numpy as np
import pytest

from vitbench.evaluate import linear_probe

SCHEDULE = linear_probe.Schedule(epochs=12, warmup_epochs=3, batch_size=32)


def data(rng, examples=100, dimensions=12, classes=5):
    centres = rng.normal(size=(classes, dimensions))
    labels = rng.integers(0, classes, examples)
    return centres[labels] + rng.normal(size=(examples, dimensions)), labels


def torch_head(features, labels, classes, lr, weight_decay, schedule, seed):
    """One head trained as VPT does, with torch: nn.Linear, SGD (momentum 0.9, weight decay
    on the weight only), the learning rate set once per epoch, mean cross-entropy."""
    import torch

    weights, _ = linear_probe.initial_heads(1, features.shape[1], classes, seed)
    head = torch.nn.Linear(features.shape[1], classes, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weights[0].T.copy()))
        head.bias.zero_()
    optimizer = torch.optim.SGD([{"params": [head.weight], "weight_decay": weight_decay},
                                 {"params": [head.bias], "weight_decay": 0.0}],
                                lr=lr, momentum=0.9)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    for epoch, epoch_batches in linear_probe.batches(len(features), schedule, seed):
        for group in optimizer.param_groups:
            group["lr"] = lr * schedule.rate(epoch)
        for index in epoch_batches:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(x[index]), y[index])
            loss.backward()
            optimizer.step()
    return head.weight.detach().numpy().T, head.bias.detach().numpy()


def test_a_grid_of_heads_trained_together_equals_each_trained_alone_by_torch():
    rng = np.random.default_rng(0)
    features, labels = data(rng)
    lrs, decays = [0.5, 0.5, 0.05, 0.05], [0.0, 1e-2, 0.0, 1e-3]
    weights, biases = linear_probe.train_heads(features, labels, 5, lrs, decays, SCHEDULE,
                                               seed=3)
    for head, (lr, decay) in enumerate(zip(lrs, decays)):
        torch_weights, torch_bias = torch_head(features, labels, 5, lr, decay, SCHEDULE, 3)
        np.testing.assert_allclose(weights[head], torch_weights, atol=1e-10)
        np.testing.assert_allclose(biases[head], torch_bias, atol=1e-10)
        alone = linear_probe.train_heads(features, labels, 5, [lr], [decay], SCHEDULE, seed=3)
        np.testing.assert_allclose(weights[head], alone[0][0], atol=1e-12)
    predicted = linear_probe.predict(weights, biases, features)
    assert predicted.shape == (4, 100) and np.mean(predicted[0] == labels) > 0.8


def test_the_schedule_warms_up_from_zero_and_decays_to_zero_by_epoch():
    schedule = linear_probe.Schedule(epochs=100, warmup_epochs=10)
    assert [schedule.rate(e) for e in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert schedule.rate(55) == pytest.approx(0.5)
    assert schedule.rate(99) == pytest.approx(0.5 * (1 + np.cos(np.pi * 89 / 90)))
    with pytest.raises(ValueError, match="one weight decay per learning rate"):
        linear_probe.train_heads(np.zeros((4, 2)), np.zeros(4), 2, [1.0], [0.0, 1.0], schedule)
