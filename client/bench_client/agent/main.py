"""``bench-agent --config FILE [--once]``: the bench agent's command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bench_client.agent.config import DEFAULT_CONFIG, ConfigError, load_config

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-agent",
        description="The Bench Orchestrator bench agent: heartbeats, claims the bench's "
        "tasks, runs their commands and reports the outcomes (see docs/agent.md).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the agent's TOML configuration (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="run tasks until there is none to claim, then exit",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration (and read the token file), then exit",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config)
        config.token()
    except ConfigError as error:
        print(f"bench-agent: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"bench-agent: {args.config}: ok ({len(config.tasks)} task handlers)")
        return 0
    from bench_client.agent.loop import Agent  # the client is only needed from here on

    return Agent(config, once=args.once).run()


if __name__ == "__main__":
    sys.exit(main())
