"""Generated protobuf and gRPC stubs for fleetwire.v1 (make proto). Do not edit."""
