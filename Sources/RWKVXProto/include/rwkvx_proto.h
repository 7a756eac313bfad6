// Umbrella header for the protoc-c output of proto/rwkvx.proto
// (regenerate with scripts/gen-proto.sh).
#include "rwkvx.pb-c.h"
