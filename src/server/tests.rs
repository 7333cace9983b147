//! The listener with real sockets on 127.0.0.1 (the integration tests cover it end to end).
