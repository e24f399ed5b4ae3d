"""The skmaker.v1 wire API: generated protobuf and gRPC stubs, and the name rules.

The `*_pb2*` modules are generated from protos/skmaker/v1 (run `make protos`; never edit).
Two modules are hand-written, because they are part of the wire contract that the control, the
workers and the client share (services may import from the client only this package): `names`,
the resource- and channel-name rules, and `transfer`, how ArtifactService's chunked, sha256-checked
streams are used.
"""
