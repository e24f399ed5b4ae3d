"""Hyperparameters, from the SDK's string map to the user script's argv (contract §1.5, §1.6, §8).

The rule is SageMaker's, reproduced step by step: the SDK JSON-encodes every value (step 1), the
API carries a string-to-string map (step 2), the trainer JSON-decodes each value and keeps the raw
string when that fails (step 3), removes the reserved and ``sagemaker_*`` keys (step 4), and
renders the rest as sorted ``--key value`` tokens with Python ``str()`` values (step 5).

Step 6 is where skmaker departs on purpose (§8): the tokens are handed to ``exec`` as a list, so
each value stays exactly one argument and no shell ever sees it. ``shell_compat=True`` rebuilds
the toolkit's ``/bin/sh -c`` command line for scripts that depend on its word splitting.
"""

from __future__ import annotations

import json
import shlex
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

RESERVED_KEYS: frozenset[str] = frozenset(
    {
        "sagemaker_program",
        "sagemaker_submit_directory",
        "sagemaker_enable_cloudwatch_metrics",
        "sagemaker_region",
        "sagemaker_container_log_level",
        "sagemaker_job_name",
        "default_user_module_name",
        "_tuning_objective_metric",
        "sagemaker_s3_output",
    }
)
"""Keys the toolkit consumes itself; they never reach argv, ``SM_HPS`` or ``SM_HP_*`` (step 4)."""

SAGEMAKER_PREFIX = "sagemaker_"
"""Any key with this prefix is a framework parameter, hidden from the user script (step 4)."""

MAX_HYPERPARAMETERS = 100
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 2500


def encode_hyperparameters(values: Mapping[str, Any]) -> dict[str, str]:
    """Encode hyperparameters the way the SageMaker SDK does for Framework estimators (step 1).

    Args:
        values: Hyperparameter names to Python values.

    Returns:
        Every key through ``str`` and every value through ``json.dumps``: ``30 -> "30"``,
        ``True -> "true"``, ``"rbf" -> '"rbf"'``, ``None -> "null"``.
    """
    return {str(key): json.dumps(value) for key, value in values.items()}


def validate_encoded(encoded: Mapping[str, str]) -> None:
    """Check the API limits on the encoded map (step 2).

    Args:
        encoded: The string-to-string map as it would travel over the API.

    Raises:
        ValueError: More than 100 pairs, a key over 256 characters, a value over 2500
            characters, or a key or value that is not a string.
    """
    if len(encoded) > MAX_HYPERPARAMETERS:
        raise ValueError(
            f"too many hyperparameters: {len(encoded)} (at most {MAX_HYPERPARAMETERS})"
        )
    for key, value in encoded.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"hyperparameter {key!r}: keys and values must be strings")
        if not key or len(key) > MAX_KEY_CHARS:
            raise ValueError(f"hyperparameter key {key[:40]!r}: must be 1-{MAX_KEY_CHARS} chars")
        if len(value) > MAX_VALUE_CHARS:
            raise ValueError(
                f"hyperparameter {key!r}: value has {len(value)} chars (at most {MAX_VALUE_CHARS})"
            )


def decode_hyperparameters(encoded: Mapping[str, str]) -> dict[str, Any]:
    """Decode each value with ``json.loads``, keeping the raw string when it is not JSON (step 3).

    A bare ``abc`` (what boto3 users often send) is not valid JSON and so arrives as ``"abc"``,
    exactly as the toolkit does it.

    Args:
        encoded: The string-to-string map from ``hyperparameters.json``.

    Returns:
        The same keys with decoded values (int, float, bool, str, list, dict or None).
    """
    decoded: dict[str, Any] = {}
    for key, value in encoded.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded


def is_framework_key(key: str) -> bool:
    """Tell whether a key belongs to the platform rather than to the user script (step 4).

    Args:
        key: A hyperparameter name.

    Returns:
        True for the reserved keys and for any key starting with ``sagemaker_``.
    """
    return key in RESERVED_KEYS or key.startswith(SAGEMAKER_PREFIX)


def split_hyperparameters(decoded: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split decoded hyperparameters into the user's and the framework's (step 4).

    Args:
        decoded: Output of `decode_hyperparameters`.

    Returns:
        ``(user, framework)``. ``user`` holds every key that is neither reserved nor
        ``sagemaker_*``: it feeds argv, ``SM_HPS`` and ``SM_HP_*``. ``framework`` holds the
        ``sagemaker_*`` keys that are not in `RESERVED_KEYS` (``SM_FRAMEWORK_PARAMS``, e.g.
        ``sagemaker_estimator_class_name`` during tuning). Reserved keys are in neither.
    """
    user = {key: value for key, value in decoded.items() if not is_framework_key(key)}
    framework = {
        key: value
        for key, value in decoded.items()
        if key.startswith(SAGEMAKER_PREFIX) and key not in RESERVED_KEYS
    }
    return user, framework


def _render_value(value: Any) -> str:
    # The toolkit treats anything with .items() as a mapping and renders its pairs with str(),
    # not JSON: {"b": 2, "a": "x"} becomes a=x,b=2.
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in sorted(value.items()))
    if value is None:
        return ""
    return str(value)


def render_argv_tokens(user: Mapping[str, Any]) -> list[str]:
    """Render user hyperparameters as the toolkit's argv tokens (step 5).

    Keys are sorted in Python string order; a key becomes ``--key``, or ``-k`` when it is one
    character long. A dict value becomes ``k=v`` pairs sorted by key and joined with ``,``;
    ``None`` becomes the empty string; anything else is ``str(value)``, so booleans arrive as
    ``True``/``False`` and lists as ``[64, 32]``.

    Args:
        user: The user half of `split_hyperparameters`.

    Returns:
        Name and value tokens, alternating. This list is also ``SM_USER_ARGS``.
    """
    tokens: list[str] = []
    for key in sorted(user):
        name = str(key)
        tokens.append(f"--{name}" if len(name) > 1 else f"-{name}")
        tokens.append(_render_value(user[key]))
    return tokens


def module_name(entry_point: str) -> str:
    """Return the module name of an entry point (``SM_MODULE_NAME``).

    Args:
        entry_point: The ``sagemaker_program`` value, e.g. ``train.py``.

    Returns:
        The entry point without its ``.py`` suffix, e.g. ``train``.
    """
    return entry_point.removesuffix(".py")


def _checked_entry_point(entry_point: str) -> PurePosixPath:
    path = PurePosixPath(entry_point)
    # The entry point names a file inside the code directory; anything that could point
    # elsewhere is a malformed job, not something to execute.
    if not entry_point or path.is_absolute() or ".." in path.parts:
        raise ValueError(
            f"entry point {entry_point!r} must be a relative path inside the source directory"
        )
    return path


def _make_executable(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"entry point {path.name!r} not found in the source directory")
    mode = path.stat().st_mode
    path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def command_for_entry_point(
    entry_point: str,
    code_dir: Path,
    tokens: Sequence[str],
    python: str,
    shell_compat: bool = False,
) -> list[str]:
    """Build the command that runs the entry point, decided as the toolkit decides it (§1.6).

    Checked in this order:

    * name ends with ``.sh``: made executable and run as
      ``["/bin/sh", "-c", "./x.sh <quoted tokens>"]``. The toolkit quotes each token with
      ``shlex.quote`` here, so every value is still one argument.
    * ``setup.py`` exists in ``code_dir``: ``[python, "-m", module, *tokens]``.
    * name ends with ``.py``: ``[python, entry_point, *tokens]``.
    * anything else: made executable and run as ``["./name", *tokens]``.

    By default no shell ever sees a token (§8). With ``shell_compat`` the Python forms become
    the toolkit's ``/bin/sh -c "<python> <entry_point> <tokens joined with spaces>"``, so values
    with spaces split, empty values vanish, quotes are stripped and globs expand, exactly as on
    SageMaker; the other forms become the same ``/bin/sh -c`` line with quoted tokens.

    Args:
        entry_point: The ``sagemaker_program`` value, relative to ``code_dir``.
        code_dir: The directory holding the user's code; the command runs with it as cwd.
        tokens: Output of `render_argv_tokens`.
        python: The interpreter that runs Python entry points.
        shell_compat: Reproduce the toolkit's shell word splitting for Python entry points.

    Returns:
        The argument list to execute with cwd ``code_dir`` and no shell.

    Raises:
        ValueError: The entry point is absolute, climbs out of ``code_dir`` with ``..``, or
            (for the forms that must be made executable) does not exist.
    """
    path = _checked_entry_point(entry_point)
    quoted = " ".join(shlex.quote(token) for token in tokens)

    if path.suffix == ".sh":
        _make_executable(code_dir / path)
        return ["/bin/sh", "-c", f"{shlex.quote(f'./{path}')} {quoted}".rstrip()]

    if (code_dir / "setup.py").exists():
        # A sub-path such as pkg/train.py is the module pkg.train under python -m.
        module = module_name(str(path)).replace("/", ".")
        command = [python, "-m", module, *tokens]
    elif path.suffix == ".py":
        command = [python, str(path), *tokens]
    else:
        _make_executable(code_dir / path)
        if shell_compat:
            return ["/bin/sh", "-c", f"{shlex.quote(f'./{path}')} {quoted}".rstrip()]
        return [f"./{path}", *tokens]

    if shell_compat:
        # The interpreter path and module are ours and are quoted; the tokens are not, which is
        # precisely the toolkit behaviour users of compat mode rely on.
        head = " ".join(shlex.quote(part) for part in command[: len(command) - len(tokens)])
        return ["/bin/sh", "-c", " ".join([head, *tokens])]
    return command
