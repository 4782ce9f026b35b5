"""The collector's side of the command channel (issue #7): pooled gRPC connections to the
enrolled exporters, and (later) the fleet service that fans commands out to many of them."""
