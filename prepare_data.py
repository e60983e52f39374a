"""Prepare pretraining data: tokenize raw text, pack it into BERT examples, write train shards + validation.

    python prepare_data.py --train_file corpus/*.txt --tokenizer_name bert-base-uncased \
        --output_dir data/prepared --max_seq_length 128 --num_shards 8

See `python prepare_data.py --help` and `budget_bert.data.prepare.prepare_dataset`.
"""

import logging
import sys

from transformers import HfArgumentParser

from budget_bert.data.data_arguments import PrepareDataArguments
from budget_bert.data.prepare import prepare_dataset


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (or a single JSON file) and prepare the data."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    parser = HfArgumentParser(PrepareDataArguments)
    try:
        if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
            (args,) = parser.parse_json_file(sys.argv[1])
        else:
            (args,) = parser.parse_args_into_dataclasses(args=argv)
        prepare_dataset(args)
    except ValueError as err:
        raise SystemExit(f"prepare_data.py: error: {err}") from None


if __name__ == "__main__":
    main()
