"""Run in a fresh process (the CPU is split into 2 logical devices before TensorFlow starts):
fast DP-SGD steps under MirroredStrategy with 2 replicas against the same step on one
device. Prints JSON: the largest difference of the noiseless updates, their size, and the
standard deviation of the noise in the update over many noisy steps.
"""

import json
import sys

import numpy as np

import compiler
from compiler.build import compile_spec
from compiler.tf import tensorflow
from compiler.training import distribution

SPEC = """
apiVersion: keraspec/v1
name: dp-mirrored
input: {vocab_size: 12, sequence_length: 6}
model:
  layers:
    - {type: embedding, output_dim: 5}
    - {type: gru, units: 7, return_sequences: true}
    - {type: layer_normalization}
    - {type: dense, units: 12}
training:
  batch_size: 8
  optimizer: {type: sgd, learning_rate: 1.0}
  privacy: {l2_norm_clip: %(clip)s, noise_multiplier: %(noise)s, implementation: fast}
  distribution: {strategy: %(strategy)s, devices_per_worker: %(devices)d}
"""


def main() -> None:
    clip, noise, draws = 0.5, float(sys.argv[1]), int(sys.argv[2])
    assert noise > 0
    tf = tensorflow()

    def spec(strategy, devices, noise):
        return compiler.load_spec(
            SPEC % dict(clip=clip, noise=noise, strategy=strategy, devices=devices)
        )

    mirrored = distribution.place(tf, spec("mirrored", 2, noise))
    assert mirrored.replicas == 2, mirrored
    with mirrored.strategy.scope():
        compiled = compile_spec(spec("mirrored", 2, noise))
        two = compiled.model
        quiet = compile_spec(spec("mirrored", 2, 0.0)).model
    one = compile_spec(spec("one_device", 1, 0.0)).model
    start = one.get_weights()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 12, (8, 6)).astype(np.int32)
    y = rng.integers(0, 12, (8, 6)).astype(np.int32)
    w = (np.arange(6)[None, :] < rng.integers(2, 7, 8)[:, None]).astype(np.float32)

    def update(model):
        model.set_weights(start)
        before = [v.numpy() for v in model.trainable_variables]
        model.train_on_batch(x, y, sample_weight=w)
        return np.concatenate(
            [(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)]
        )

    reference = update(one)
    results = [update(two) for _ in range(draws)]
    key = compiled.dp_step.noise.key.numpy().tobytes()
    out = {
        "key_agreed": distribution.agree_bytes(mirrored, key) == key,
        "replicas": mirrored.replicas,
        "update_size": float(np.max(np.abs(reference))),
        "max_difference": float(np.max(np.abs(update(quiet) - reference))),
        "noise_std": float(np.std(np.concatenate([r - reference for r in results]))),
        "noise_count": int(sum(r.size for r in results)),
        "batch": 8,
        "clip": clip,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
