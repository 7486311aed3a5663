"""Make `saved_model/`, the tiny TensorFlow SavedModel the directory-model tests register byte for byte.

Run once with TensorFlow installed (not a test dependency), from this directory:
    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu && /tmp/tf/bin/python make_saved_model.py
The output is committed; the tests only read it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf


class Scale(tf.Module):
    """y = x * w + b, with two variables, so that the SavedModel has variables/ as well as saved_model.pb."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable([[2.0], [0.5]], name="w")
        self.b = tf.Variable([1.0], name="b")

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self.w) + self.b


def main() -> None:
    target = Path(__file__).resolve().parent / "saved_model"
    shutil.rmtree(target, ignore_errors=True)
    module = Scale()
    vocabulary = target.parent / "labels.txt"
    vocabulary.write_text("low\nhigh\n")
    module.labels = tf.saved_model.Asset(str(vocabulary))
    tf.saved_model.save(module, str(target), signatures=module.__call__)
    vocabulary.unlink()


if __name__ == "__main__":
    main()
