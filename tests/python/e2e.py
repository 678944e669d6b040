"""Shared by the client scripts: the test's configuration (argv[1], JSON) and assertions that say
what went wrong, and exit 1, instead of a bare AssertionError."""
import json
import sys
import traceback


def config():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} CONFIG_JSON")
    return json.loads(sys.argv[1])


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg, got=None):
    if not cond:
        fail(msg if got is None else f"{msg}; got: {got!r}")


def eq(got, want, what):
    check(got == want, f"{what}: expected {want!r}", got)


def raises(exc_type, fn, what):
    """Runs fn and returns the exception of exc_type it raised; fails on anything else."""
    try:
        result = fn()
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001 — reported, not swallowed
        fail(f"{what}: expected {exc_type.__name__}, got {type(e).__name__}: {e}")
    fail(f"{what}: expected {exc_type.__name__}, but the call returned {result!r}")


def step(name):
    """Decorator: runs the function at once, prints OK, and turns an unexpected exception into a FAIL."""

    def run(fn):
        try:
            fn()
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            fail(f"{name}: unexpected {type(e).__name__}: {e}")
        print(f"ok: {name}", flush=True)
        return fn

    return run
