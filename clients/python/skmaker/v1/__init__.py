"""Generated protobuf and gRPC stubs of the skmaker.v1 wire API (run `make protos`; never edit)."""
