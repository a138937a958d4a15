#!/usr/bin/env python
"""Write `model_cards/aio-reid/README.md` from evaluation results on disk, then copy its results table into the
README (see `modeling_aio.evaluation.model_card`).

    python scripts/make_model_card.py                                          # from outputs/dev (dev_eval.sh)
    python scripts/make_model_card.py --results model_cards/aio-reid/dev_results  # from the results kept with the card
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import MODEL_CARD, REPO_ROOT
from modeling_aio.evaluation.model_card import update_readme_results, write_model_card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "outputs" / "dev",
                        help="one folder per model label holding TASK.json files")
    parser.add_argument("--out", type=Path, default=MODEL_CARD, help="the card to write")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md", help="README whose results table to update")
    args = parser.parse_args()
    update_readme_results(args.readme, write_model_card(args.results, args.out))


if __name__ == "__main__":
    main()
