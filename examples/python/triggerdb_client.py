#!/usr/bin/env python3
"""A trigger-db client in Python with stock grpcio and default channel options.

It shows that a plain `grpc.insecure_channel("unix:///path")` works against
trigger-db's Unix socket (grpcio sends the %-encoded socket path as the
HTTP/2 :authority; the daemon reads it as "localhost"), and how to use the
API from Python:

  1. Health/Check of trigger.v1.TriggerService;
  2. Query: the last few stored triggers, newest first;
  3. Add: a few LINK_UP triggers for a made-up interface (needs a writer:
     root, or a member of the daemon's writer group);
  4. Subscribe with resume: subscribe after the id before the first one
     added, read some, drop the stream, subscribe again resuming after the
     last id read, and show that every added trigger arrived exactly once.

Stubs are generated at run time from the repository's .proto files with
grpc_tools.protoc into a temporary directory (nothing generated is
committed). Needs: grpcio, grpcio-tools, grpcio-health-checking (see
README.md here for the tested versions).

  triggerdb_client.py [--socket /run/trigger-db/trigger.sock] [--add 6]
"""

import argparse
import importlib
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto", "proto")


def generate_stubs(out_dir):
    """Compiles trigger/v1/trigger.proto into out_dir and imports it."""
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "trigger/v1/trigger.proto",
    ])
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) on {PROTO_ROOT}/trigger/v1/trigger.proto")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("trigger.v1.trigger_pb2"),
            importlib.import_module("trigger.v1.trigger_pb2_grpc"))


def subscribe(stub, pb, after, want, seen, timeout=10.0):
    """Reads triggers after id `after` until `want` ids of the filter
    arrived; returns the ids in order of arrival."""
    req = pb.SubscribeRequest(filter=pb.TriggerFilter(interfaces=["py0"]),
                              resume_after_id=after)
    got = []
    stream = stub.Subscribe(req, timeout=timeout)
    try:
        for item in stream:
            if item.HasField("gap"):
                sys.exit(f"gap: missed from id {item.gap.first_missed_id}")
            if not item.HasField("trigger"):
                continue
            tid = item.trigger.id
            if tid in seen:
                sys.exit(f"duplicate trigger id {tid} after resuming")
            seen.add(tid)
            got.append(tid)
            if len(got) == want:
                break
    finally:
        stream.cancel()
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default="/run/trigger-db/trigger.sock")
    ap.add_argument("--add", type=int, default=6, help="triggers to add (>= 2)")
    args = ap.parse_args()
    if args.add < 2:
        ap.error("--add must be at least 2")

    with tempfile.TemporaryDirectory(prefix="triggerdb-stubs-") as stubs:
        pb, pb_grpc = generate_stubs(stubs)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        # Default options: no grpc.default_authority override.
        with grpc.insecure_channel(f"unix://{os.path.abspath(args.socket)}") as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="trigger.v1.TriggerService"),
                timeout=5)
            print("health:", health_pb2.HealthCheckResponse.ServingStatus.Name(health.status))
            if health.status != health_pb2.HealthCheckResponse.SERVING:
                sys.exit("trigger-db is not serving")

            stub = pb_grpc.TriggerServiceStub(ch)
            rows = stub.Query(pb.QueryRequest(page_size=3, order=pb.ORDER_DESCENDING),
                              timeout=5)
            print(f"query: {len(rows.triggers)} newest stored trigger(s)")
            for t in rows.triggers:
                print(f"  id={t.id} {pb.TriggerType.Name(t.type)} "
                      f"if={t.interface.name!r} source={pb.Source.Name(t.source)}")

            triggers = [
                pb.Trigger(type=pb.TRIGGER_TYPE_LINK_UP,
                           interface=pb.Interface(name="py0"),
                           link_state=pb.LinkState(admin_up=True, carrier=True, mtu=1500 + i))
                for i in range(args.add)
            ]
            ids = list(stub.Add(pb.AddRequest(triggers=triggers), timeout=5).ids)
            print(f"add: ids {ids}")
            if len(ids) != args.add:
                sys.exit(f"add returned {len(ids)} ids for {args.add} triggers")

            # Resume: first read half, then reconnect after the last id read.
            seen = set()
            first = subscribe(stub, pb, ids[0] - 1, args.add // 2, seen)
            print(f"subscribe: read {first}, reconnecting after id {first[-1]}")
            rest = subscribe(stub, pb, first[-1], args.add - len(first), seen)
            print(f"subscribe (resumed after {first[-1]}): read {rest}")
            if first + rest != ids:
                sys.exit(f"resume delivered {first + rest}, expected {ids}")
            print(f"subscribe: all {len(ids)} added triggers once each, in order, no duplicates")


if __name__ == "__main__":
    main()
