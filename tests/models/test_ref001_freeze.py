"""Reference 001's freeze sets (paper and code), the whole-network training mode, and the fresh
first convolution: counted on torchvision's architectures built on the meta device (no weights,
no forward passes), against the authors' rule re-applied literally as their code wrote it."""

import pytest
import torch
from torch import nn

from triggerlab.config import load_config
from triggerlab.errors import ConfigError
from triggerlab.models import build_configured, fresh_first_conv
from triggerlab.models.backbones import imagenet_architecture, tvm
from triggerlab.models.transfer import TransferModel, plan_freeze


@pytest.fixture(autouse=True)
def _own_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def architecture(name: str) -> nn.Module:
    """triggerlab's transfer network for ``name`` (10 classes), without weights or memory."""
    with torch.device("meta"):
        return imagenet_architecture(name, 10, {})


def authors_trainable(name: str) -> set[str]:
    """The authors' steps in their order (R001-paper models.py:100-171, 223-251): the ImageNet
    network, freeze_layers, the new last layer, then AlexNet's ``num > 7`` loop."""
    with torch.device("meta"):
        model = tvm().get_model(
            name,
            weights=None,
            num_classes=1000,
            **({"aux_logits": True, "init_weights": False} if name == "googlenet" else {}),
        )
        if name == "googlenet":  # torchvision drops them when it loads the ImageNet weights
            model.aux1 = model.aux2 = None
        if type(model) is tvm().VGG:
            for param, layer in zip(model.features.parameters(), model.features, strict=False):
                param.requires_grad = type(layer) is nn.BatchNorm2d
        elif type(model) in (tvm().ResNet, tvm().GoogLeNet):
            for pname, param in model.named_parameters():
                param.requires_grad = "bn" in pname
        else:
            for param in model.parameters():
                param.requires_grad = False
        if name == "alexnet":
            model.classifier[6] = nn.Linear(4096, 10)
            for num, (_, param) in enumerate(model.named_parameters()):
                if num > 7:
                    param.requires_grad = True
        elif name == "vgg19_bn":
            model.classifier[-1] = nn.Linear(4096, 10)
        else:
            model.fc = nn.Linear(model.fc.in_features, 10)
    return {n for n, p in model.named_parameters() if p.requires_grad}


def trainable(net: nn.Module) -> dict[str, int]:
    return {n: p.numel() for n, p in net.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["vgg19_bn", "alexnet", "resnet152", "googlenet"])
def test_ref001_code_trains_what_the_authors_code_trained(name):
    net = architecture(name)
    plan = plan_freeze(net, "ref001_code")
    assert set(trainable(net)) == authors_trainable(name)
    assert plan.trainable == sum(trainable(net).values())
    assert plan.cut is None  # more than a tail trains: no feature cache


def test_vgg19_bn_code_set_is_the_misaligned_zip():
    net = architecture("vgg19_bn")
    plan_freeze(net, "ref001_code")
    chosen = trainable(net)
    kinds = {n: type(net.get_submodule(n.rpartition(".")[0])) for n in chosen}
    convs = {n: c for n, c in chosen.items() if kinds[n] is nn.Conv2d}
    norms = [n for n in chosen if kinds[n] is nn.BatchNorm2d]
    linears = [n for n in chosen if kinds[n] is nn.Linear]
    assert len(linears) == 6  # all three fully connected layers, not only the new last one
    assert (len(convs), sum(convs.values())) == (14, 8_371_008)
    all_norms = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert (len(norms), 2 * len(all_norms)) == (13, 32)
    assert (len(chosen), sum(chosen.values())) == (33, 127_963_210)


def test_alexnet_code_set_is_the_last_convolution_and_the_classifier():
    net = architecture("alexnet")
    plan = plan_freeze(net, "ref001_code")
    names = [n for n, _ in net.named_parameters()]
    assert list(trainable(net)) == names[-8:]
    assert list(trainable(net))[:2] == ["features.10.weight", "features.10.bias"]
    assert plan.trainable == 55_165_194
    unfrozen = architecture("alexnet")
    plan_freeze(unfrozen, load_config(None, ["model.freeze={unfreeze_last: 8}"]).model.freeze)
    assert trainable(unfrozen) == trainable(net)


def test_resnet152_code_set_keeps_the_downsample_norms_frozen():
    net = architecture("resnet152")
    plan = plan_freeze(net, "ref001_code")
    norms = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = [n for n in norms if not net.get_submodule(n).weight.requires_grad]
    assert frozen == [f"layer{i}.0.downsample.1" for i in (1, 2, 3, 4)]
    assert (len(trainable(net)), plan.trainable) == (304, 164_234)
    paper = architecture("resnet152")
    plan_freeze(paper, "ref001_paper")
    assert len(trainable(paper)) == 304 + 8  # the text: every batch norm


def test_googlenet_code_set_is_every_norm_and_the_last_layer():
    net = architecture("googlenet")
    plan = plan_freeze(net, "ref001_code")
    assert (len(trainable(net)), plan.trainable) == (116, 24_810)


def test_ref001_paper_is_head_for_alexnet_and_classifier_and_bn_for_the_others():
    alexnet = architecture("alexnet")
    plan = plan_freeze(alexnet, "ref001_paper")
    assert list(trainable(alexnet)) == [
        f"classifier.{i}.{k}" for i in (1, 4, 6) for k in ("weight", "bias")
    ]
    assert plan.cut_name == "classifier"  # a tail: the feature cache applies
    vgg = architecture("vgg19_bn")
    plan_freeze(vgg, "ref001_paper")
    assert len(trainable(vgg)) == 2 + 32  # the last linear layer and every batch norm


def test_reference_policies_refuse_other_architectures():
    with pytest.raises(ConfigError, match="ref001_paper/ref001_code are reference 001's rules"):
        plan_freeze(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "ref001_code")


# ---- frozen layers in training mode ---------------------------------------------------------


def tiny(frozen_mode: str) -> TransferModel:
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    model = TransferModel(nn.Sequential(body, nn.Linear(4 * 6 * 6, 2)), frozen_mode=frozen_mode)
    model.freeze("classifier")
    return model


def test_frozen_mode_train_runs_frozen_batch_norms_on_batch_statistics():
    kept, authors = tiny("eval").train(), tiny("train").train()
    x = torch.rand(8, 3, 8, 8) * 5
    for model in (kept, authors):
        model(x)
    kept_norm, authors_norm = kept.net[0][1], authors.net[0][1]
    assert not kept_norm.training and authors_norm.training
    assert torch.equal(kept_norm.running_mean, torch.zeros(4))  # untouched, as pretrained
    assert not torch.equal(authors_norm.running_mean, torch.zeros(4))  # updated by the batch
    assert not authors_norm.weight.requires_grad  # still frozen: only its mode differs
    assert authors.net[0][2].training and not kept.net[0][2].training  # the body's dropout
    authors.eval()
    assert not authors_norm.training  # evaluation is evaluation in both modes


# ---- the fresh first convolution --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "first"),
    [("resnet152", "conv1"), ("vgg19_bn", "features.0"), ("googlenet", "conv1.conv")],
)
def test_fresh_first_conv_replaces_the_convolution_the_authors_replaced(name, first):
    net = architecture(name)
    old = net.get_submodule(first)
    with torch.device("meta"):
        assert fresh_first_conv(net, "fresh", 1) == first
    new = net.get_submodule(first)
    assert new is not old and new.in_channels == 3  # the authors' n_channels is 3 on MNIST
    assert (new.kernel_size, new.stride, new.padding) == (old.kernel_size, old.stride, old.padding)
    assert (new.bias is None) == (old.bias is None)
    plan_freeze(net, "ref001_code", fresh=[first])
    assert all(p.requires_grad for p in new.parameters())  # new after freezing: it trains


LITE = ["model.name=efficientnet_lite0", "model.pretrained=imagenet", "model.freeze=classifier"]


def test_fresh_first_conv_on_grey_images_trains_and_drops_the_pretrained_filters():
    kept, _ = build_configured(load_config(None, LITE).model, (1, 32, 32), 10)
    fresh, _ = build_configured(
        load_config(None, [*LITE, "model.first_conv=fresh"]).model, (1, 32, 32), 10
    )
    half = "model.normalization={mean: [0.5], std: [0.5]}"  # the authors' MNIST constants
    grey, _ = build_configured(
        load_config(None, [*LITE, "model.first_conv=fresh_grey", half]).model, (1, 32, 32), 10
    )
    assert not kept.net.conv_stem.weight.requires_grad
    assert fresh.net.conv_stem.weight.requires_grad and fresh.repeat_channels == 3
    assert fresh.net.conv_stem.in_channels == 3
    assert not torch.equal(fresh.net.conv_stem.weight, kept.net.conv_stem.weight)
    assert grey.net.conv_stem.in_channels == 1 and grey.repeat_channels is None
    assert grey.plan.cut is None and fresh.plan.cut is None  # the body trains: no cache
    assert grey(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_fresh_first_conv_settings_are_checked():
    with pytest.raises(ConfigError, match="model: first_conv: fresh replaces a pretrained"):
        load_config(None, ["model.first_conv=fresh"])
    cfg = load_config(None, [*LITE, "model.first_conv=fresh_grey"]).model
    with pytest.raises(ConfigError, match="fresh_grey takes one grey channel; the images have 3"):
        build_configured(cfg, (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="3 means for 1-channel images .first_conv: fresh_grey"):
        build_configured(cfg, (1, 32, 32), 10)  # the RGB weights' normalisation


@pytest.mark.parametrize(
    ("name", "tensors"), [("alexnet", 6), ("vgg19_bn", 34), ("resnet152", 312), ("googlenet", 116)]
)
def test_ref001_paper_counts_per_backbone(name, tensors):
    net = architecture(name)
    plan_freeze(net, "ref001_paper")
    norms = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(trainable(net)) == tensors == 2 * len(norms) + (6 if name == "alexnet" else 2)
