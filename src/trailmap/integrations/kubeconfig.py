"""What a kubeconfig given to the server may hold: credentials and addresses in the file
itself, nothing that runs a command or reads a file on the server."""

from __future__ import annotations

from typing import Any, Final

import yaml

__all__ = ["CLUSTER_KEYS", "USER_KEYS", "KubeconfigRefused", "check_kubeconfig"]

# `exec` and `auth-provider` would run a command on the server, and the file-path keys
# (`tokenFile`, `client-key`, `certificate-authority`...) would read the server's files.
CLUSTER_KEYS: Final = frozenset(
    {"server", "certificate-authority-data", "insecure-skip-tls-verify", "tls-server-name"}
)
USER_KEYS: Final = frozenset({"token", "client-certificate-data", "client-key-data"})


class KubeconfigRefused(ValueError):
    """The kubeconfig is not one the server takes; the message says why."""


def check_kubeconfig(text: str) -> dict[str, Any]:
    """The kubeconfig, parsed; KubeconfigRefused names what the server does not take."""
    try:
        loaded = yaml.safe_load(text)
    except RecursionError:
        raise KubeconfigRefused("the kubeconfig is nested too deeply") from None
    except yaml.YAMLError as error:
        # Where, never the parser's snippet of the line: it would show the secret back.
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or "cannot be read"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise KubeconfigRefused(f"the kubeconfig is not YAML: {problem}{where}") from None
    if not isinstance(loaded, dict):
        raise KubeconfigRefused(
            "the kubeconfig is not a YAML mapping (apiVersion, clusters, users...)"
        )
    for section, inner, allowed in (
        ("clusters", "cluster", CLUSTER_KEYS),
        ("users", "user", USER_KEYS),
    ):
        entries = loaded.get(section) or []
        if not isinstance(entries, list):
            raise KubeconfigRefused(f"the kubeconfig's {section} is not a list")
        for entry in entries:
            body = entry.get(inner) if isinstance(entry, dict) else None
            if not isinstance(body, dict):
                raise KubeconfigRefused(
                    f"each of the kubeconfig's {section} needs a {inner} mapping"
                )
            extra = sorted(str(k) for k in set(body) - allowed)
            if extra:
                raise KubeconfigRefused(
                    f"the kubeconfig's {inner} has {', '.join(extra)}: the server takes only "
                    f"{', '.join(sorted(allowed))} (no exec, auth-provider or file paths)"
                )
    return loaded
