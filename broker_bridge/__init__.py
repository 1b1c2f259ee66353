"""The broker bridge: fleetwire's stateless public gRPC front door (JobService)."""
