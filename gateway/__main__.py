"""Run the gateway: `python -m gateway --routes routes.yaml --port 8080`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.routes import RoutesFile
from gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--routes", type=Path, help="routes file (default: $ROLLGATE_ROUTES_FILE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    settings = GatewaySettings(**({"routes_file": args.routes} if args.routes else {}))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings, RoutesFile.load(settings.routes_file))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
