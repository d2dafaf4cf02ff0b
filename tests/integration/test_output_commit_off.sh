#!/bin/bash
# The negative control of test_output_commit.sh: the same run with the
# replicator's --no-output-commit must show the client a failure.
exec bash "$(dirname "$0")/test_output_commit.sh" --no-output-commit
