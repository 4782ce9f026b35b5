"""The command channel an enrolled collector uses to manage this server (issue #7): exec,
terminals, files and Docker control over gRPC with mutual TLS. Loaded only when a feature is
enabled in exporter.yml, so a metrics-only exporter never imports grpcio."""

import os

# gRPC's fork handlers abort a forked child now and then ("Check failure" in fork_posix.cc)
# when other threads are inside gRPC, and starting a command as another user forks (no
# vfork with setuid). Nothing here forks to keep using gRPC in the child, so turn them off;
# this must happen before grpc is first imported, which is why it sits in this package's
# __init__ (every module that imports grpc is below it).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
