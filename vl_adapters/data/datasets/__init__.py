"""One module per dataset, each reading its public release's files (see docs/datasets/)."""
