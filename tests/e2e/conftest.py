"""The e2e tests run on the session's one stack (tests/support/stack.py, fixture `stack`)."""

from tests.support.stack import GRACE_S, SECRET, SERVICES, Stack

__all__ = ["GRACE_S", "SECRET", "SERVICES", "Stack"]
