"""Training stages: the weights kept with weight averaging are the moving average of the trajectory."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import train


def _tiny_problem(seed: int = 0) -> tuple[keras.Model, tf.data.Dataset, tf.data.Dataset]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.float32)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    # a fixed order (no shuffle), 5 steps of 8 per epoch: both runs see the same batches
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return model, train_ds, tf.data.Dataset.from_tensor_slices((x, y)).batch(40)


class _Trajectory(keras.callbacks.Callback):
    """The model's weights after every training step."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.steps.append([w.copy() for w in self.model.get_weights()])


@pytest.mark.parametrize("momentum", [0.0, 0.6])
def test_weight_averaging_keeps_the_moving_average_of_the_steps(tmp_path, momentum):
    model, train_ds, val_ds = _tiny_problem()
    initial = model.get_weights()
    # the raw trajectory, recorded step by step with plain Adam at the same rate (averaging does not change it)
    reference, _, _ = _tiny_problem()
    reference.set_weights(initial)
    train.compile_detector(reference, 0.05)
    trajectory = _Trajectory()
    reference.fit(train_ds, epochs=1, callbacks=[trajectory], verbose=0, shuffle=False)
    assert len(trajectory.steps) == 5

    result = train.fit_detector(model, train_ds, val_ds, epochs=1, learning_rate=0.05, out_dir=tmp_path,
                                name="avg", patience=1, verbose=0, ema_momentum=momentum)
    # oracle: average = first step's weights, then m * average + (1 - m) * weights after each later step
    average = [w.copy() for w in trajectory.steps[0]]
    for step in trajectory.steps[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, step)]
    for kept, expected in zip(model.get_weights(), average):
        np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-6)
    # the checkpoint holds the same weights as the model in memory
    restored = keras.models.load_model(result.model_path)
    for kept, saved in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_allclose(saved, kept, rtol=1e-6)
    last = trajectory.steps[-1]
    gap = max(float(np.abs(k - w).max()) for k, w in zip(model.get_weights(), last))
    if momentum > 0:
        assert gap > 1e-3  # not the last step's weights: averaging took place
    else:
        assert gap < 1e-6


def test_training_on_a_dataset_raises_no_shuffle_warning(tmp_path):
    """The training datasets shuffle themselves; Keras' fit must not be left warning that its own
    shuffle flag is ignored (it did, once per fit, dozens of times in notebook 08's output)."""
    import warnings

    model, train_ds, val_ds = _tiny_problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.fit_detector(model, train_ds, val_ds, epochs=1, learning_rate=0.05, out_dir=tmp_path, name="plain",
                           patience=1, verbose=0)
        train.ReusableFit(_tiny_problem()[0]).fit(train_ds, val_ds, epochs=1, learning_rate=0.05, patience=1)
        model.fit(train_ds, epochs=1, verbose=0)  # control: Keras' default does warn, so the check can fail
    shuffle_warnings = [str(w.message) for w in caught if "shuffle" in str(w.message)]
    assert len(shuffle_warnings) == 1, shuffle_warnings
