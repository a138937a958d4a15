"""Dataset loaders: ReID datasets read from their own on-disk layouts into `datasets.Dataset` (see `loaders`)."""

from .loaders import (
    FEATURES, LOADERS, UnreadableImagesWarning, image_paths, load_cuhk03, load_cuhk_pedes, load_dukemtmc_reid,
    load_icfg_pedes, load_llcm, load_market1501, load_market_sketch_1k, load_msmt17, load_paired_visible_infrared,
    load_pku_sketch, load_pooled_index, load_regdb, load_reid_dataset, load_rstpreid, load_sysu_mm01,
    load_two_camera_folder, load_viper, records_to_dataset,
)

__all__ = [
    "FEATURES", "LOADERS", "UnreadableImagesWarning", "image_paths", "load_reid_dataset", "records_to_dataset",
    "load_cuhk03", "load_cuhk_pedes", "load_dukemtmc_reid", "load_icfg_pedes", "load_llcm", "load_market1501",
    "load_market_sketch_1k", "load_msmt17", "load_paired_visible_infrared", "load_pku_sketch", "load_pooled_index",
    "load_regdb", "load_rstpreid", "load_sysu_mm01", "load_two_camera_folder", "load_viper",
]
