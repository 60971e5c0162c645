"""Activation clustering (Chen et al., 2018): a class holding poisoned samples splits into two
clusters of penultimate activations, the smaller one poisoned.

Each class's features are reduced to 10 principal components and split by
2-means; the smaller cluster is flagged when it holds at most
``cluster_share`` of the class. A sample's score is how much nearer it lies to
the small cluster's centre than to the large one's.
"""

from __future__ import annotations

import torch

from triggerlab.catalogue.defenses import ActivationClusteringSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome
from triggerlab.defenses.sample_groups import class_groups, features_and_groups

COMPONENTS = 10


def activation_clustering(
    features: torch.Tensor, labels: torch.Tensor, cluster_share: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and flags ``[N]`` from 2-means on each class's leading principal components."""
    from sklearn.cluster import KMeans  # sklearn's import is slow; only this detector needs it

    scores = torch.zeros(features.shape[0], dtype=torch.float64)
    flagged = torch.zeros(features.shape[0], dtype=torch.bool)
    for index in class_groups(labels):
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


def run_activation_clustering(
    spec: ActivationClusteringSpec, inputs: DefenseInputs
) -> DefenseOutcome:
    features, groups = features_and_groups(inputs)
    scores, flagged = activation_clustering(features, groups, spec.cluster_share, inputs.seed)
    return DefenseOutcome({"clean_samples": 0}, sample_scores=(scores, flagged))
