"""The frozen-feature cache is exact only when the frozen body is a fixed function of the
image while the tail trains: a body whose batch norms use each batch's statistics (reference
001's code calls ``model.train()`` on everything) or whose dropout is on is not."""

from torch import nn

from triggerlab.models.transfer import TransferModel
from triggerlab.run.inputs import _body_varies_in_training


def network():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_a_frozen_body_in_evaluation_mode_is_cacheable():
    model = TransferModel(network())
    plan = model.freeze("classifier")
    model.eval()
    assert not _body_varies_in_training(model, plan.cut)
    assert not model.training  # the mode it was in is restored


def test_a_body_whose_batch_norm_trains_is_not_cacheable():
    class BatchStatistics(TransferModel):
        """Frozen parts left in training mode, as reference 001's code leaves them."""

        def train(self, mode: bool = True) -> "BatchStatistics":
            nn.Module.train(self, mode)
            return self

    model = BatchStatistics(network())
    plan = model.freeze("classifier")
    model.eval()
    assert _body_varies_in_training(model, plan.cut)
    assert not model.training
