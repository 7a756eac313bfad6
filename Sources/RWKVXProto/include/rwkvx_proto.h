// Umbrella header for the protoc-c output of proto/rwkvx.proto.
