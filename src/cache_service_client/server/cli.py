"""The gateway's command line: ``python -m cache_service_client.server`` (or ``devcache serve``).

``python -m cache_service_client.server --url redis://... --port 8080``.

The backend comes from ``--url`` (``redis://``, ``rediss://``, ``unix://``, ``memory://``, with
any setting as a query option) or, without it, from the ``CACHE_SERVICE_*`` environment
variables. The bearer token is read from the ``CACHE_SERVICE_GATEWAY_TOKEN`` environment variable
or from ``--auth-token-file``, never from the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cache_service_client.config import Settings, load_settings, mask_url
from cache_service_client.exceptions import CacheServiceError, ConfigurationError
from cache_service_client.rest.wire import DEFAULT_MAX_BODY_BYTES

__all__ = ["TOKEN_ENV", "build_parser", "main", "run", "serve", "settings_of"]

#: Environment variable holding the gateway's bearer token.
TOKEN_ENV = "CACHE_SERVICE_GATEWAY_TOKEN"

logger = logging.getLogger("cache_service_client.server")

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the gateway's options to ``parser`` (a new one if None) and return it.

    ``devcache serve`` adds them to its subcommand; this needs no web framework installed.
    """
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="python -m cache_service_client.server", description=__doc__.splitlines()[0]
        )
    parser.add_argument("--url", help="the backend (default: from CACHE_SERVICE_* variables)")
    parser.add_argument(
        "--socket-timeout", type=float, metavar="S", help="seconds to wait for Redis's replies"
    )
    parser.add_argument("--config", metavar="FILE", help="a TOML settings file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (8080)")
    parser.add_argument(
        "--auth-token-file", type=Path, help=f"file holding the bearer token (or ${TOKEN_ENV})"
    )
    parser.add_argument("--open-health", action="store_true", help="serve /health without a token")
    parser.add_argument(
        "--open-metrics", action="store_true", help="serve /metrics (Prometheus) without a token"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body ({DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--allow-client-ttl", action="store_true", help="accept a ttl query parameter on writes"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's log level (info)")
    parser.add_argument(
        "--print-openapi", action="store_true", help="print the OpenAPI document and exit"
    )
    return parser


def _token(args: argparse.Namespace) -> str | None:
    path: Path | None = args.auth_token_file
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"--auth-token-file {path}: cannot be read ({exc.strerror})"
            ) from None
        if not token:
            raise ConfigurationError(f"--auth-token-file {path}: is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def settings_of(args: argparse.Namespace) -> Settings:
    """The backend's settings, as for every ``devcache`` command.

    ``--url`` and ``--socket-timeout`` over the ``CACHE_SERVICE_*`` variables over ``--config``.
    """
    url: str | None = args.url
    if url is not None and url.split(":", 1)[0].lower() in ("http", "https"):
        raise ConfigurationError(
            f"--url {mask_url(url)}: the gateway serves a Redis or in-memory backend, "
            "not another gateway"
        )
    arguments: dict[str, object] = {}
    if url is not None:
        arguments["url"] = url
    if args.socket_timeout is not None:
        arguments["socket_timeout"] = args.socket_timeout
    return load_settings(arguments=arguments, file=args.config)


async def serve(args: argparse.Namespace) -> None:
    """Build the repository, serve the gateway until interrupted, then close everything."""
    import uvicorn
    from dependency_injector import providers

    from cache_service_client.container import (
        Container,
        resolve_async_repository,
        shutdown_resources,
    )
    from cache_service_client.server.app import create_app

    settings = settings_of(args)
    token = _token(args)
    if token is None and args.host not in _LOOPBACK:
        # On stderr as well as in the log: the command line configures no logging, so the
        # record alone would reach nobody.
        logger.warning("serving on %s without a bearer token: anyone can read and write", args.host)
        print(
            f"warning: serving on {args.host} without a bearer token: anyone who can reach it "
            f"can read and write; set {TOKEN_ENV} or --auth-token-file",
            file=sys.stderr,
            flush=True,
        )
    container = Container()
    container.settings.override(providers.Object(settings))
    repository = await resolve_async_repository(container)
    try:
        app = create_app(
            repository,
            auth_token=token,
            open_health=args.open_health,
            open_metrics=args.open_metrics,
            max_body_bytes=args.max_body_bytes,
            allow_client_ttl=args.allow_client_ttl,
        )
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on"
        )
        await uvicorn.Server(config).serve()
    finally:
        await repository.close()
        await shutdown_resources(container)


def run(args: argparse.Namespace) -> int:
    """Serve (or print the OpenAPI document) as ``args`` say; return the exit code."""
    if args.print_openapi:
        from cache_service_client.server.openapi import openapi_json

        sys.stdout.write(openapi_json())
        return 0
    try:
        asyncio.run(serve(args))
    except CacheServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(
            f"error: {exc}; the gateway needs the [server] extra "
            "(pip install 'cache-service-client[server]')",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # pragma: no cover - interactive
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, then :func:`run`."""
    return run(build_parser().parse_args(argv))
