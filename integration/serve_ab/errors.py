"""The two ways a plan stops short: bad input (nothing starts) and a failed run (the plan goes on)."""


class UsageError(Exception):
    """Bad input: the message names what is wrong and what is accepted (exit status 2)."""


class RunError(Exception):
    """One run failed (server start, client, request, trace): recorded as failed with the log tail."""
