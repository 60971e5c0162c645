"""Poisoned-sample detectors on the training set, from penultimate features, class by class.

* Spectral signatures (Tran, Li and Madry, 2018): centre a class's features, score
  each sample by its squared projection on the top right singular vector, and
  flag the top ``1.5 x expected_fraction`` of the class.
* Activation clustering (Chen et al., 2018): reduce a class's features to 10
  principal components, split them with 2-means, and flag the smaller cluster
  when it holds at most ``cluster_share`` of the class. A sample's score is how
  much nearer it lies to the small cluster's centre than to the large one's.

Both return per-sample scores (higher = more suspicious) and flags.
"""

from __future__ import annotations

import math

import torch
from sklearn.cluster import KMeans

COMPONENTS = 10


def _classes(labels: torch.Tensor) -> list[torch.Tensor]:
    return [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]


def spectral_signatures(
    features: torch.Tensor, labels: torch.Tensor, expected_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and flags ``[N]``: per class, the squared projection on the top singular vector."""
    scores = torch.zeros(features.shape[0], dtype=torch.float64)
    flagged = torch.zeros(features.shape[0], dtype=torch.bool)
    for index in _classes(labels):
        centred = features[index].double() - features[index].double().mean(dim=0)
        if index.numel() < 2:
            continue
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        score = (centred @ vh[0]) ** 2
        scores[index] = score
        count = min(index.numel(), math.ceil(1.5 * expected_fraction * index.numel()))
        flagged[index[torch.argsort(score, descending=True)[:count]]] = True
    return scores, flagged


def activation_clustering(
    features: torch.Tensor, labels: torch.Tensor, cluster_share: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and flags ``[N]`` from 2-means on each class's leading principal components."""
    scores = torch.zeros(features.shape[0], dtype=torch.float64)
    flagged = torch.zeros(features.shape[0], dtype=torch.bool)
    for index in _classes(labels):
        if index.numel() < 4:
            continue
        centred = features[index].double() - features[index].double().mean(dim=0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        reduced = (centred @ vh[:COMPONENTS].T).numpy()
        km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(reduced)
        sizes = torch.bincount(torch.from_numpy(km.labels_).long(), minlength=2)
        small = int(torch.argmin(sizes))
        centres = torch.from_numpy(km.cluster_centers_)
        points = torch.from_numpy(reduced)
        distance = torch.cdist(points, centres)
        scores[index] = distance[:, 1 - small] - distance[:, small]
        if sizes[small] <= cluster_share * index.numel():
            flagged[index[torch.from_numpy(km.labels_ == small)]] = True
    return scores, flagged
