"""Generated gRPC modules of proto/vpsmon/v1/*.proto (`make proto`); do not edit them."""
