"""Run the CitrineOS double by hand: ``python -m citrineos_testdouble --rest-port 8080``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from citrineos_testdouble.double import DEFAULT_AMQP_URL, DEFAULT_DSN, CitrineOSDouble


def main(argv: list[str] | None = None) -> int:
    """Start the double and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m citrineos_testdouble", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--rest-port", type=int, default=8080, help="REST port (CitrineOS: 8080)")
    parser.add_argument("--ws-port", type=int, default=8092, help="OCPP 1.6J port (CitrineOS: 8092)")
    parser.add_argument("--graphql-port", type=int, default=8090, help="GraphQL port (Hasura: 8090)")
    parser.add_argument("--dsn", default=None, help=f"PostgreSQL connection string (default {DEFAULT_DSN})")
    parser.add_argument("--amqp-url", default=None, help=f"RabbitMQ URL (default {DEFAULT_AMQP_URL})")
    parser.add_argument("--max-call-length", type=float, default=30.0, help="seconds a CSMS call may wait")
    parser.add_argument("--id-tag", action="append", help="accept only these idTags (repeatable)")
    parser.add_argument("--keep-schema", action="store_true", help="keep the database schema on exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with CitrineOSDouble(
        host=args.host,
        rest_port=args.rest_port,
        ws_port=args.ws_port,
        graphql_port=args.graphql_port,
        dsn=args.dsn,
        amqp_url=args.amqp_url,
        max_call_length_s=args.max_call_length,
        id_tags=args.id_tag,
        keep_schema=args.keep_schema,
    ) as double:
        print(f"REST     {double.rest_url}")
        print(f"OCPP 1.6 {double.ws_url}/<stationId>  (subprotocol ocpp1.6)")
        print(f"GraphQL  {double.graphql_url}")
        print(f"Database {double.dsn}  schema {double.schema}")
        print("Ctrl-C stops", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
