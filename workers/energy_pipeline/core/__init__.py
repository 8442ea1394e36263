"""Core contracts and plumbing every worker shares: no I/O beyond logging and metrics."""
