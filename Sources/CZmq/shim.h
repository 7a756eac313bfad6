// libzmq from Debian's libzmq3-dev. No pkg-config: its .pc file adds an
// -isystem flag that SwiftPM rejects on every build.
#include <zmq.h>
