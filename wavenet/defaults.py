"""What client and server agree on without asking: the port a server listens on and the largest gRPC message."""

DEFAULT_PORT = 50051
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's own default; the server's --max-message-bytes may change it
