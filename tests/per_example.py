"""Per-example gradients computed the slow, obvious way: the yardstick for fast DP."""

import numpy as np

from compiler.tf import tensorflow, tf_keras


def per_example_gradients(model, x, y, w) -> list[list[np.ndarray]]:
    """Each example's gradient, one example at a time, as tensorflow-privacy defines its
    loss (the mean over the example's tokens, weighted by `w`)."""
    tf, keras = tensorflow(), tf_keras()
    sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    out = []
    for b in range(len(x)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(sce(y[b : b + 1], model(x[b : b + 1], training=False)) * w[b])
        out.append(
            [
                tf.convert_to_tensor(g).numpy()
                for g in tape.gradient(loss, model.trainable_variables)
            ]
        )
    return out


def global_norm(grads) -> float:
    return float(np.sqrt(sum(np.sum(g * g) for g in grads)))
