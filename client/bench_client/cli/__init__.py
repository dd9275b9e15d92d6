"""``benchctl``, the command line of the Bench Orchestrator (``bench_client.cli.main``)."""
