"""Messages and service stubs generated from proto/leadpipe/v1 by grpcio-tools (clients/generate)."""
