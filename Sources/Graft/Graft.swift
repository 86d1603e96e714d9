// `import Graft` brings the registry core (types, policies, the `Registry` façade) and the
// local registry (SQLite metadata and blob files under one directory) that opens it.
@_exported import GraftCore
