"""scikit-learn's bundled 8×8 digits (1797 images, no network), split 80/20 stratified by class."""
from __future__ import annotations

from . import Dataset, labels_tensor, scale_pixels
from ..errors import DataError

TEST_FRACTION = 0.2


def load_digits(data_seed: int) -> Dataset:
    """Pixels 0..16 mapped to [-1, 1]; the stratified split is a deterministic function of ``data_seed``."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("the digits task needs scikit-learn: pip install 'biohsic[digits]'") from None
    bunch = sklearn_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=TEST_FRACTION, stratify=bunch.target, random_state=data_seed)
    return Dataset("digits", scale_pixels(x_train, 16.0), labels_tensor(y_train),
                   scale_pixels(x_test, 16.0), labels_tensor(y_test), n_classes=10, input_shape=(1, 8, 8))
