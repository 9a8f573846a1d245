"""Command-line entry points of the service and export features (`rnnkit serve`,
`rnnkit export`). Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `serve` and `export` on the `rnnkit` parser."""
