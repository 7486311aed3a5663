"""The one exception family users see; each class carries the exit code the CLI returns."""

from __future__ import annotations


class MregError(Exception):
    """Base of every error mreg reports to a user. The message is a finished sentence."""

    exit_code = 1


class InvalidInputError(MregError):
    """Input the user can fix: a spec, a lock, a file or an argument is wrong."""

    exit_code = 2


class SpecError(InvalidInputError):
    """`registry.toml` (or a file it names) is not valid."""


class LockError(InvalidInputError):
    """The spec's packages cannot be resolved into one consistent lock."""


class NotFoundError(MregError):
    """A model, version, alias or object does not exist."""

    exit_code = 3


class EngineError(MregError):
    """Docker or BuildKit failed: the engine is unreachable, or a build, push or run failed."""

    exit_code = 4


class StorageError(MregError):
    """The object store or the record store failed or holds something unexpected."""

    exit_code = 5


class IntegrityError(MregError):
    """Bytes or digests do not match what a record says they are."""

    exit_code = 6


class SkewError(MregError):
    """The built images do not hold the same versions of the distributions they share, or not the lock's."""

    exit_code = 7


class Interrupted(MregError):
    """The user or the CI runner stopped mreg (SIGINT/SIGTERM); everything begun was cleaned up."""

    exit_code = 130
