"""``fleetwire keys …``: a node owner's key files (create, show, rotate). No server call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

keys_app = typer.Typer(help="Node key files.", no_args_is_help=True)
err_console = Console(stderr=True)


@keys_app.command("new")
def keys_new(file: Annotated[Path, typer.Option(help="Key file to create (0600).")]) -> None:
    """Create a node key file and print its public key."""
    from fleetwire.domain.keys import create_key
    from fleetwire.protocol.signing import key_id

    key = create_key(file)
    public = bytes(key.verify_key)
    typer.echo(json.dumps({"public_key": public.hex(), "key_id": key_id(public)}))


@keys_app.command("show")
def keys_show(file: Annotated[Path, typer.Option(help="Key file.")]) -> None:
    """Print the public key of a node key file (and of a rotated key waiting beside it)."""
    from fleetwire.domain.errors import ConfigurationError
    from fleetwire.domain.keys import load_key, next_key_path
    from fleetwire.protocol.signing import key_id

    try:
        public = bytes(load_key(file).verify_key)
        shown: dict[str, str] = {"public_key": public.hex(), "key_id": key_id(public)}
        successor = next_key_path(file)
        if successor.exists():
            next_public = bytes(load_key(successor).verify_key)
            shown |= {"next_public_key": next_public.hex(), "next_key_id": key_id(next_public)}
    except (OSError, ConfigurationError) as err:
        err_console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None
    typer.echo(json.dumps(shown))


@keys_app.command("rotate")
def keys_rotate(file: Annotated[Path, typer.Option(help="The node's key file.")]) -> None:
    """Start a key rotation: write a new key to FILE.next (0600) and print it.

    The running node keeps FILE. Next: register the new key
    (`fleetwire admin nodes register NODE --public-key NEW --replace`), then send the node
    SIGHUP: it finishes its running jobs, switches to the new key and reconnects.
    """
    from fleetwire.domain.errors import ConfigurationError
    from fleetwire.domain.keys import create_next_key, load_key, next_key_path
    from fleetwire.protocol.signing import key_id

    try:
        key = create_next_key(file)
    except FileExistsError:
        err_console.print(
            f"[red]{next_key_path(file)} already exists[/]: register it and SIGHUP the node, "
            "or delete it to start over"
        )
        raise typer.Exit(1) from None
    except ConfigurationError as err:
        err_console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None
    public = bytes(key.verify_key)
    current = bytes(load_key(file).verify_key)
    typer.echo(
        json.dumps(
            {
                "public_key": public.hex(),
                "key_id": key_id(public),
                "file": str(next_key_path(file)),
                "replaces_key_id": key_id(current),
            }
        )
    )
