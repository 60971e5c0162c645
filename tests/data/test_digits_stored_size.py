"""The digits standing in for a dataset stored at another size (``stored_size``)."""

import pytest
import torch

from triggerlab.config import DataConfig
from triggerlab.data.prepare import load_source
from triggerlab.data.transforms import resize_images
from triggerlab.errors import ConfigError


def test_stored_size_upsamples_the_digits_once_at_load():
    own = load_source(DataConfig(name="digits", resize=None)).train.images
    stored = load_source(DataConfig(name="digits", options={"stored_size": 28})).train.images
    assert own.shape[-2:] == (8, 8) and stored.shape[-2:] == (28, 28)
    assert torch.equal(stored, resize_images(own, (28, 28)))


@pytest.mark.parametrize("side", [4, 1000])
def test_a_stored_size_below_the_digits_or_absurdly_large_is_refused(side):
    with pytest.raises(ConfigError, match="data.options.stored_size: expected 8"):
        load_source(DataConfig(name="digits", options={"stored_size": side}))
