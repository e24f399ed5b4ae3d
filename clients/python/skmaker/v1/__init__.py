"""The skmaker.v1 wire API: generated protobuf and gRPC stubs, and the name rules.

The `*_pb2*` modules are generated from protos/skmaker/v1 (run `make protos`; never edit).
`names` is hand-written: the resource- and channel-name rules are part of the wire contract,
checked by the control and the client alike, so they live with the messages.
"""
