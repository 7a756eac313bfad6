// Replaced by the protoc-c output of proto/rwkvx.proto.
