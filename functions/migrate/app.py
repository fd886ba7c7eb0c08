"""CloudFormation custom resource: applies the schema migrations at deploy, before new code serves."""

from makima.lambda_support.migrations import make_migration_handler

handler = make_migration_handler()
