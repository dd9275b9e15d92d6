"""``bench-agent``: the reference bench agent. It posts the bench's heartbeats, claims the
bench's tasks, runs each task's configured command in a process group of its own, keeps
the task's lease alive and reports the outcome; see docs/agent.md."""
