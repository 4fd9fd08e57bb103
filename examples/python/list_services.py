#!/usr/bin/env python3
"""Lists the services of a gRPC server through server reflection, with
grpcio-reflection's client (which asks grpc.reflection.v1alpha) and a
default-options channel.

  list_services.py unix:///run/trigger-db/trigger.sock [--expect NAME ...]

With --expect, exits non-zero unless every NAME is listed.
"""

import argparse
import sys

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="e.g. unix:///run/trigger-db/trigger.sock")
    ap.add_argument("--expect", nargs="*", default=[], metavar="NAME")
    args = ap.parse_args()
    with grpc.insecure_channel(args.target) as ch:
        services = ProtoReflectionDescriptorDatabase(ch).get_services()
    for s in services:
        print(s)
    missing = [n for n in args.expect if n not in services]
    if missing:
        sys.exit(f"{args.target}: not listed: {', '.join(missing)}")


if __name__ == "__main__":
    main()
