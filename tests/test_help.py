"""Every flag of every command explains itself."""

import argparse
import dataclasses

from rnnkit import cli
from rnnkit.config import CHOICES, DataConfig, ModelConfig, TrainConfig


def _commands(parser, name="rnnkit"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def test_every_flag_of_every_command_has_a_help_line():
    missing = []
    for name, parser in _commands(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_config_flags_show_their_choices_and_defaults():
    train = dict(_commands(cli.build_parser()))["rnnkit train"]
    by_dest = {a.dest: a for a in train._actions}
    for klass in (DataConfig, ModelConfig, TrainConfig):
        for f in dataclasses.fields(klass):
            text = by_dest[f.name].help
            if f.name in CHOICES:
                assert "|".join(CHOICES[f.name]) in text, f.name
            assert "default" in text, f.name
    # The defaults shown are those of a run without --preset.
    assert "(default 128)" in by_dest["hidden_size"].help
    assert "fp32|bf16; default fp32" in by_dest["precision"].help
    help_text = train.format_help()  # argparse formats every line (a stray % would raise)
    assert "--tokenizer" in help_text and "sentencepiece" in help_text
