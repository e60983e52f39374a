"""Prepare pretraining data: tokenize raw text, pack it into BERT examples, write train shards + validation.

    python prepare_data.py --train_file corpus/*.txt --tokenizer_name bert-base-uncased \
        --output_dir data/prepared --max_seq_length 128 --num_shards 8

See `python prepare_data.py --help` and `budget_bert.data.prepare.prepare_dataset`.
"""

from transformers import HfArgumentParser

from budget_bert.cli import UsageError, json_file_argv, run_cli, setup_logging
from budget_bert.data.data_arguments import PrepareDataArguments
from budget_bert.data.prepare import prepare_dataset


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (or a single JSON file) and prepare the data; a bad flag or input is a `UsageError`."""
    setup_logging()
    parser = HfArgumentParser(PrepareDataArguments)
    parser.prog = "prepare_data.py"
    try:
        (args,) = parser.parse_args_into_dataclasses(args=json_file_argv(argv), look_for_args_file=False)
        prepare_dataset(args)
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(str(error)) from None


if __name__ == "__main__":
    run_cli("prepare_data.py", main)
