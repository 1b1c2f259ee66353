"""The operators' web console: server-rendered pages over MeshAdminService
(docs/operations.md#console)."""
