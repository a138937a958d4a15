"""Training: data (`data`, `recipe`), the Trainer run (`trainer`), the trunk stages (`trunk_distillation`,
`trunk_binding`), the calibration stages (`calibration`) and the pipeline `scripts/train.py` runs (`pipeline`).

Needs the `train` extra (accelerate, datasets); import the sub-modules you use.
"""
